"""The Colab tutorial's install cell, run here with a stand-in google.colab: it installs from the configured source
(an uploaded wheel by default, or a git URL) and pins the torch that is already installed, so pip never replaces it."""
import importlib.metadata as md, json, subprocess, sys, types
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def install_cell() -> str:
    nb = json.loads((ROOT / "nbs" / "tutorials" / "colab_sd21.ipynb").read_text())
    cells = ["".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code" and "DIFFSTYLER_SOURCE" in "".join(c["source"])]
    assert len(cells) == 1, "one install cell with DIFFSTYLER_SOURCE"
    return cells[0]


def run_cell(monkeypatch, tmp_path, source=None, files=()):
    calls, widget = [], []
    colab = types.ModuleType("google.colab")
    colab.output = types.SimpleNamespace(enable_custom_widget_manager=lambda: widget.append(True))
    monkeypatch.setitem(sys.modules, "google", types.ModuleType("google"))
    monkeypatch.setitem(sys.modules, "google.colab", colab)
    monkeypatch.setattr(subprocess, "run", lambda args, **kw: calls.append(args))
    content = tmp_path / "content"; content.mkdir()
    for f in files: (content / f).write_bytes(b"")
    code = install_cell().replace('"/content/', f'"{content}/')
    if source is not None: code = code.replace('DIFFSTYLER_SOURCE = ""', f"DIFFSTYLER_SOURCE = {source!r}")
    exec(compile(code, "colab-install-cell", "exec"), {})
    assert widget == [True]
    (args,) = calls
    keep = Path(args[args.index("-c") + 1]).read_text()
    return args[-1], keep, content


def test_uploaded_wheel_is_the_default_and_torch_is_pinned(monkeypatch, tmp_path):
    spec, keep, content = run_cell(monkeypatch, tmp_path, files=["diffstyler-0.1.0-py3-none-any.whl"])
    assert spec == f"diffstyler[fastsam] @ {(content / 'diffstyler-0.1.0-py3-none-any.whl').as_uri()}"
    assert f"torch=={md.version('torch')}\n" in keep and f"torchvision=={md.version('torchvision')}\n" in keep
    assert "torchaudio" not in keep   # not installed here: nothing to pin


def test_git_url_source(monkeypatch, tmp_path):
    spec, _, _ = run_cell(monkeypatch, tmp_path, source="git+https://github.com/diffstyler/diffstyler@main")
    assert spec == "diffstyler[fastsam] @ git+https://github.com/diffstyler/diffstyler@main"


def test_no_wheel_and_no_source_says_what_to_do(monkeypatch, tmp_path):
    with pytest.raises(FileNotFoundError, match="upload diffstyler-"):
        run_cell(monkeypatch, tmp_path)
