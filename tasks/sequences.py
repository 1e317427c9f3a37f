"""Train on your own sequences: `.venv/bin/python tasks/sequences.py --data FILE [options]`
(the Python that has graphrnn installed; or activate the venv first).

The same as `graphrnn train sequences --data FILE [options]`; the task itself lives
in graphrnn/tasks/sequences.py so that the command works from an installed package
(see docs/tasks.md).
"""
import sys

from graphrnn.cli import main

if __name__ == "__main__":
    sys.exit(main(["train", "sequences", *sys.argv[1:]]))
