import argparse
import sys

from lib.greet import greet

if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--name")
    p.add_argument("--out")
    a = p.parse_args()
    text = greet(a.name)
    print(f"python {sys.version.split()[0]} in {sys.prefix}")
    with open(a.out, "w") as f:
        f.write(text + "\n")
    print(text)
