#!/usr/bin/env python
"""Train the toy world's model (a thin wrapper over `python -m diffstyler.toy train`).

Example: python scripts/train_toy.py --run RUNS/p1 --minutes 85   (the options of `diffstyler toy-train --help`)
Writes the run folder (log, checkpoints, EMA pipeline) to --run and, with --out, copies the final pipeline there."""
import sys
from diffstyler.toy import _main

if __name__ == "__main__":
    raise SystemExit(_main(["train", *sys.argv[1:]]))
