"""Run the primes experiment: `.venv/bin/python tasks/primes.py [options]`
(the Python that has graphrnn installed; or activate the venv first).

The same as `graphrnn train primes [options]`; the task itself lives in
graphrnn/tasks/primes.py so that the command works from an installed package.
Options: --iterations, --seed, --cell, --hidden, --lr, --optimizer, --out,
--resume, --checkpoint-every, --quiet (see docs/tasks.md).
"""
import sys

from graphrnn.cli import main

if __name__ == "__main__":
    sys.exit(main(["train", "primes", *sys.argv[1:]]))
