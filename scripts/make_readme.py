#!/usr/bin/env python3
"""Write README.md from nbs/index.ipynb without Quarto (nbdev_readme needs Quarto, which these machines lack).

Markdown cells are copied; code cells whose first line is '#| hide' are dropped; other code cells become
```python blocks with their text outputs. The title cell's '> summary' becomes the first paragraph.
Usage: python scripts/make_readme.py [--check]   (--check: exit 1 if README.md is out of date)"""
import json, sys
from pathlib import Path

root = Path(__file__).resolve().parent.parent

def render(nb_path: Path) -> str:
    nb = json.loads(nb_path.read_text())
    parts = ["<!-- WARNING: generated from nbs/index.ipynb by scripts/make_readme.py; edit the notebook -->"]
    for c in nb["cells"]:
        src = "".join(c["source"])
        if c["cell_type"] == "markdown":
            parts.append(src.strip())
            continue
        lines = src.split("\n")
        if any(l.strip() in ("#| hide", "#|hide") for l in lines): continue
        code = "\n".join(l for l in lines if not l.startswith("#|")).strip()
        if code: parts.append(f"```python\n{code}\n```")
        outs = [("".join(o.get("text", ""))) for o in c.get("outputs", []) if o.get("output_type") == "stream"]
        outs += ["".join(o.get("data", {}).get("text/plain", "")) for o in c.get("outputs", []) if "data" in o]
        out = "".join(outs).strip()
        if out: parts.append(f"    " + out.replace("\n", "\n    "))
    return "\n\n".join(parts) + "\n"

if __name__ == "__main__":
    text = render(root / "nbs" / "index.ipynb")
    readme = root / "README.md"
    if "--check" in sys.argv:
        ok = readme.exists() and readme.read_text() == text
        print("README.md is up to date" if ok else "README.md is out of date: run `make readme`")
        sys.exit(0 if ok else 1)
    readme.write_text(text); print(f"wrote {readme}")
