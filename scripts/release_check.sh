#!/usr/bin/env bash
# Release check: build the wheel and sdist, `twine check` them, install the wheel in a fresh venv (outside the
# project, so nothing from the source tree is imported) and run `diffstyler demo` from it.
# Dependencies (REUSE):
#   all   (default, CI): the fresh venv reuses every distribution of PYTHON's environment except diffstyler, through a
#         .pth file pointing at a folder of links; the wheel is installed with --no-deps, and `pip check` proves that
#         what it declares (settings.ini's minimums) is satisfied. Seconds instead of minutes of downloads.
#   torch: only the torch stack is reused (torch, torchvision, triton, CUDA wheels: 5 GB); pip resolves and downloads
#         every other dependency fresh from the index (about 10 minutes here).
#   none: everything is installed fresh, torch as TORCH_SPEC pins it (the CUDA wheels come from PyPI: 5 GB).
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
REUSE=${REUSE:-all}
if [ "$REUSE" = all ] || [ "$REUSE" = torch ]; then
    layer="$(dirname "$VENV")/reused-site-packages"; rm -rf "$layer"; mkdir -p "$layer"
    "$PY" - "$layer" "$REUSE" <<'PY'
import sys, importlib.metadata as md
from pathlib import Path
layer, mode, linked, base = Path(sys.argv[1]), sys.argv[2], set(), None
for d in md.distributions():
    name = (d.metadata["Name"] or "").lower().replace("_", "-")
    if name in ("diffstyler", "pip"): continue
    if mode == "torch" and not (name in ("torch", "torchvision", "triton") or name.startswith(("nvidia-", "cuda-"))): continue
    base = Path(d.locate_file(""))
    tops = {Path(f).parts[0] for f in (d.files or []) if not str(f).startswith("..") and not str(f).endswith(".pth")}
    for t in tops - linked:
        if (base / t).exists(): (layer / t).symlink_to(base / t); linked.add(t)
print(f"reusing {len(linked)} site-packages entries ({mode}) from {base}")
PY
    site=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
    echo "$layer" > "$site/_reused_site_packages.pth"
fi
case "$REUSE" in
    all) "$VENV/bin/python" -m pip uninstall -q -y setuptools 2>/dev/null || true   # the venv's old copy would hide the reused one
         "$VENV/bin/python" -m pip install -q --no-deps "$whl" && "$VENV/bin/python" -m pip check ;;
    torch) "$VENV/bin/python" -m pip install -q "$whl" ;;   # torch's own small dependencies (sympy, jinja2, ...) too
    *) "$VENV/bin/python" -m pip install -q $TORCH_SPEC "$whl" ;;
esac
"$VENV/bin/python" -c 'import torch, torchvision; print("fresh venv: torch", torch.__version__, "torchvision", torchvision.__version__)'
t2=$SECONDS
out=$(mktemp -d); trap 'rm -rf "$out" ${tmp:+"$tmp"}' EXIT
cd "$out"   # not the source tree: the installed package must stand alone
"$VENV/bin/diffstyler" --help >/dev/null
"$VENV/bin/python" -c 'import diffstyler, pathlib; p = pathlib.Path(diffstyler.__file__); import sys; assert str(p).startswith(sys.prefix), p; print("installed:", p.parent)'
"$VENV/bin/diffstyler" demo --out "$out/demo" --quiet ${DEMO_ARGS:-}   # DEMO_ARGS e.g. "--lora-steps 50" for a shorter run
test -s "$out/demo/grid.png" && test -s "$out/demo/metrics.json"
echo "release check passed: build+twine $((t1 - t0)) s, fresh venv install $((t2 - t1)) s, demo $((SECONDS - t2)) s"
