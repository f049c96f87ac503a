"""Docs checks that need no build: nbdev's doc processing (nbdev_proc_nbs, nbdev_docs, scripts/build_docs.py) runs
every cell that has an import in it, so a cell that also computes would be re-run at doc time, where it is slow or
fails with a NameError on state from earlier cells (nbdev's FAQ: keep imports in cells of their own)."""
import warnings
from pathlib import Path

from execnb.nbio import read_nb
from nbdev.process import NBProcessor
from nbdev.processors import _do_eval   # nbdev's own rule for which cells its doc processing executes

ROOT = Path(__file__).resolve().parent.parent


def mixed_cells(path):
    "Indices of code cells that nbdev's doc processing would execute although they hold more than imports."
    nb = NBProcessor(nb=read_nb(path), procs=[]).nb
    out = []
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "code": continue
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter("always")
            if _do_eval(cell) and any("imports and other code" in str(x.message) for x in w): out.append(i)
    return out


def test_doc_processing_runs_only_imports_exports_and_show_doc():
    bad = {str(p.relative_to(ROOT)): c for p in sorted((ROOT / "nbs").rglob("*.ipynb")) if (c := mixed_cells(p))}
    assert not bad, f"cells mixing imports with other code (move the imports into a cell of their own): {bad}"


def test_the_check_finds_a_mixed_cell(tmp_path):
    import nbformat
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("import math\nx = math.pi"),
                                         nbformat.v4.new_code_cell("import math"), nbformat.v4.new_code_cell("x = 1")])
    nbformat.write(nb, tmp_path / "a.ipynb")
    assert mixed_cells(tmp_path / "a.ipynb") == [0]
