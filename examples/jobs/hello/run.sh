# No shebang on purpose: the cloud runs cmd with bash and makes inputs executable.
set -eu
greeting_file=$1 result=$2 who=$3
echo "hello from job ${DSJOBS_JOB_ID:-?}: mood is $MOOD"
echo "{\"progress\": 50, \"message\": \"halfway\"}" >> "$JOB_PROGRESS_FILENAME"
greeting=$(cat "$greeting_file")
echo "$greeting, $who! (params: $(tr -d '\n ' < params.json))" > "$result"
mkdir -p out/report
for f in data/*.txt data/nested/*.txt; do
  wc -c < "$f" | tr -d ' ' > "out/report/$(basename "$f").size"
done
ls data | sort > out/report/listing.txt
echo "a warning on stderr" >&2
echo "{\"progress\": 100, \"message\": \"done\"}" >> "$JOB_PROGRESS_FILENAME"
echo "done: wrote $result and out/report"
