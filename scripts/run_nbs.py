"""Execute notebooks and keep their outputs (the docs show them): `python scripts/run_nbs.py nbs/05_transfer.ipynb ...`.

Cells are skipped exactly as `nbdev_test` skips them (`#| eval: false` and the settings' `tst_flags`, e.g. `#| slow`);
skipped cells keep the outputs they had. Uses execnb (what nbdev_test runs on) rather than nbconvert, which knows
nothing of nbdev's directives and would run the slow and GPU-only cells. Run `nbdev_clean` afterwards. Notebooks with
ipywidgets (09) need a real Jupyter kernel to save widget state: do not run those through this script."""
import configparser, sys, time
from pathlib import Path

from execnb.nbio import read_nb, write_nb
from execnb.shell import CaptureShell

ROOT = Path(__file__).resolve().parents[1]
cfg = configparser.ConfigParser(); cfg.read(ROOT / "settings.ini")
FLAGS = set(cfg["DEFAULT"].get("tst_flags", "").split())


def _directives(source: str):
    return [l[2:].strip().replace(" ", "") for l in source.splitlines() if l.startswith("#|")]


def skip(cell) -> bool:
    if cell.cell_type != "code" or "nbdev_export(" in cell.source: return True
    d = _directives(cell.source)
    return "eval:false" in d or any(x.split(":")[0] in FLAGS for x in d)


def run(path: Path) -> float:
    t0 = time.time()
    nb = read_nb(path)
    if any("ipywidgets" in c.source for c in nb.cells if c.cell_type == "code"):
        raise SystemExit(f"{path}: uses ipywidgets; execute it in Jupyter so that widget state is saved.")
    shell = CaptureShell(path)
    import os; cwd = os.getcwd(); os.chdir(path.parent)
    try: shell.run_all(nb, exc_stop=True, preproc=skip)
    finally: os.chdir(cwd)
    write_nb(nb, path)
    return time.time() - t0


if __name__ == "__main__":
    for p in sys.argv[1:]:
        print(f"{p}: {run(Path(p).resolve()):.0f} s", flush=True)
