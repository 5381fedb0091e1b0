"""Count words in the files named on the command line."""
import sys


def count(path):
    with open(path, encoding="utf-8") as f:
        return sum(len(line.split()) for line in f)


if __name__ == "__main__":
    for p in sys.argv[1:]:
        print(f"{count(p):8d} {p}")
    if len(sys.argv) == 1:
        print(f"{sum(len(l.split()) for l in sys.stdin):8d}")
