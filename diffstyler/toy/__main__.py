"""`python -m diffstyler.toy train|eval`: the toy world's command line (`diffstyler.toy._main`, nbs/08_toy.ipynb).

Written by hand: nbdev writes one module per notebook, and this one only calls the overview chapter's `_main`."""
from . import _main

if __name__ == "__main__": raise SystemExit(_main())
