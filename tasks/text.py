"""Train on your own text: `.venv/bin/python tasks/text.py --data FILE [options]`
(the Python that has graphrnn installed; or activate the venv first).

The same as `graphrnn train text --data FILE [options]`; the task itself lives
in graphrnn/tasks/text.py so that the command works from an installed package
(see docs/tasks.md).
"""
import sys

from graphrnn.cli import main

if __name__ == "__main__":
    sys.exit(main(["train", "text", *sys.argv[1:]]))
