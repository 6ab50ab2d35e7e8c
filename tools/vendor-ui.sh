#!/usr/bin/env bash
# Fetch the job page's vendored JavaScript again (engine/ui/static/vendor/) from the npm registry and check it
# against the digests in VENDORED.txt; with --update, copy the files in. Needs npm; the build and the tests do not
# (the files are committed).
set -euo pipefail
dest="$(cd "$(dirname "$0")/.." && pwd)/engine/ui/static/vendor"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cd "$tmp"
npm pack --silent uplot@1.6.32 ansi_up@6.0.6 >/dev/null
mkdir uplot ansi_up
tar xzf uplot-1.6.32.tgz -C uplot
tar xzf ansi_up-6.0.6.tgz -C ansi_up
declare -A src=(
  [uPlot.iife.min.js]=uplot/package/dist/uPlot.iife.min.js
  [uPlot.min.css]=uplot/package/dist/uPlot.min.css
  [LICENSES/uPlot.LICENSE]=uplot/package/LICENSE
  [ansi_up.js]=ansi_up/package/ansi_up.js
  [LICENSES/ansi_up.LICENSE]=ansi_up/package/LICENSE
)
status=0
while read -r name _pkg _path _license sha; do
  case "$name" in ''|\#*) continue ;; esac
  got=$(sha256sum "${src[$name]}" | cut -d' ' -f1)
  if [ "$got" != "$sha" ]; then
    echo "vendor-ui: $name: sha256 $got, VENDORED.txt says $sha" >&2
    status=1
  elif [ "${1:-}" = "--update" ]; then
    install -m 0644 -D "${src[$name]}" "$dest/$name"
  elif ! cmp -s "${src[$name]}" "$dest/$name"; then
    echo "vendor-ui: $dest/$name differs from the package's file" >&2
    status=1
  fi
done < "$dest/VENDORED.txt"
[ $status -eq 0 ] && echo "vendor-ui: every vendored file matches its package"
exit $status
