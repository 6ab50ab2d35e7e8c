import argparse
import collections
import json
import os

if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--text")
    p.add_argument("--top", type=int)
    p.add_argument("--out")
    a = p.parse_args()
    words = open(a.text).read().lower().split()
    top = collections.Counter(words).most_common(a.top)
    with open(a.out, "w") as f:
        json.dump(dict(top), f, indent=1)
    with open(os.environ["JOB_PROGRESS_FILENAME"], "a") as f:
        f.write(json.dumps({"progress": 100, "message": f"{len(words)} words"}) + "\n")
    print("top words:", top)
