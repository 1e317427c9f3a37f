"""Run the lstm-toy experiment: `.venv/bin/python tasks/lstm_toy.py [options]`
(the Python that has graphrnn installed; or activate the venv first).

The same as `graphrnn train lstm-toy [options]`: Nico Jimenez's example_0, a
100-unit lstm_nico cell learning -0.5, 0.2, 0.1, -0.5 in its first hidden unit
(see docs/tasks.md). Options: --iterations, --seed, --lr, --out, --resume,
--checkpoint-every, --quiet, --set init=independent.
"""
import sys

from graphrnn.cli import main

if __name__ == "__main__":
    sys.exit(main(["train", "lstm-toy", *sys.argv[1:]]))
