"""Run the binary-addition experiment: `.venv/bin/python tasks/binary_addition.py [options]`
(the Python that has graphrnn installed; or activate the venv first).

The same as `graphrnn train binary-addition [options]`; the task itself lives in
graphrnn/tasks/binary_addition.py so that the command works from an installed package.
Options: --iterations, --seed, --cell, --hidden, --lr, --optimizer, --out,
--resume, --checkpoint-every, --quiet (see docs/tasks.md).
"""
import sys

from graphrnn.cli import main

if __name__ == "__main__":
    sys.exit(main(["train", "binary-addition", *sys.argv[1:]]))
