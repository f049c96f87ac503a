#!/usr/bin/env bash
# Release check: build the wheel and sdist, `twine check` them, install the wheel in a fresh venv (outside the
# project, so nothing from the source tree is imported) and run `diffstyler demo` from it.
# torch: by default the fresh venv reuses the torch stack of PYTHON's environment (torch, torchvision, triton and the
# CUDA wheels, 5 GB) through a .pth file pointing at a folder of links to exactly those distributions: pip sees them
# installed and installs the wheel and every other dependency fresh. REUSE_TORCH=0 installs TORCH_SPEC's pins instead
# (pip finds them on local disk where the machine has them; the CUDA wheels come from PyPI: minutes, 5 GB).
# Usage: scripts/release_check.sh PYTHON [VENV_DIR]   (make release-check)
set -euo pipefail
PY=${1:?usage: release_check.sh PYTHON [VENV_DIR]}
if [ -n "${2:-}" ]; then VENV=$2; else tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT; VENV=$tmp/venv; fi
TORCH_SPEC=${TORCH_SPEC:-torch==2.14.1 torchvision==0.29.1}
t0=$SECONDS
rm -rf dist && "$PY" -m build --outdir dist >/dev/null
"$PY" -m twine check --strict dist/*
whl=$(ls dist/diffstyler-*.whl)
"$PY" -c 'import sys, zipfile; n = zipfile.ZipFile(sys.argv[1]).namelist(); sys.exit(0 if "diffstyler/assets/toy/unet/diffusion_pytorch_model.safetensors" in n else "the wheel lacks the toy weights")' "$whl"
"$PY" -c 'import sys, tarfile; n = tarfile.open(sys.argv[1]).getnames(); sys.exit(0 if any(f.endswith("diffstyler/assets/toy/unet/diffusion_pytorch_model.safetensors") for f in n) else "the sdist lacks the toy weights")' dist/diffstyler-*.tar.gz
t1=$SECONDS
python_bin=$("$PY" -c 'import sys; print(sys._base_executable)')
rm -rf "$VENV" && "$python_bin" -m venv "$VENV"
if [ "${REUSE_TORCH:-1}" = 1 ]; then
    layer="$(dirname "$VENV")/torch-layer"; rm -rf "$layer"; mkdir -p "$layer"
    "$PY" - "$layer" <<'PY'
import sys, importlib.metadata as md
from pathlib import Path
layer, linked = Path(sys.argv[1]), set()
for d in md.distributions():
    name = (d.metadata["Name"] or "").lower().replace("_", "-")
    if not (name in ("torch", "torchvision", "triton") or name.startswith(("nvidia-", "cuda-"))): continue
    base = Path(d.locate_file(""))
    tops = {Path(f).parts[0] for f in (d.files or []) if not str(f).startswith("..")}
    for t in tops - linked:
        if (base / t).exists(): (layer / t).symlink_to(base / t); linked.add(t)
print(f"reusing {len(linked)} torch-stack entries from {base}")
PY
    site=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
    echo "$layer" > "$site/_torch_layer.pth"
    "$VENV/bin/python" -m pip install -q "$whl"   # torch's own small dependencies (sympy, jinja2, ...) install here too
else
    "$VENV/bin/python" -m pip install -q $TORCH_SPEC "$whl"
fi
"$VENV/bin/python" -c 'import torch, torchvision; print("fresh venv: torch", torch.__version__, "torchvision", torchvision.__version__)'
t2=$SECONDS
out=$(mktemp -d); trap 'rm -rf "$out" ${tmp:+"$tmp"}' EXIT
cd "$out"   # not the source tree: the installed package must stand alone
"$VENV/bin/diffstyler" --help >/dev/null
"$VENV/bin/python" -c 'import diffstyler, pathlib; p = pathlib.Path(diffstyler.__file__); assert "site-packages" in str(p), p; print("installed:", p.parent)'
"$VENV/bin/diffstyler" demo --out "$out/demo" --quiet
test -s "$out/demo/grid.png" && test -s "$out/demo/metrics.json"
echo "release check passed: build+twine $((t1 - t0)) s, fresh venv install $((t2 - t1)) s, demo $((SECONDS - t2)) s"
