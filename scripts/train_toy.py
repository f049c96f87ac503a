#!/usr/bin/env python
"""Train the toy world's model (a thin wrapper over `python -m diffstyler.toy train`).

Example: python scripts/train_toy.py --minutes 75 --threads 1 --snr-floor 1   (the options of `python -m diffstyler.toy train --help`)
Writes the pipeline to diffstyler/assets/toy (or --out) and the full log to --work."""
import sys
from diffstyler.toy import _main

if __name__ == "__main__":
    _main(["train", *sys.argv[1:]])
