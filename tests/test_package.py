"""Package-level checks that live outside the notebooks: the README, the public names, setup.py."""
import subprocess, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_readme_is_generated_from_index():
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / "make_readme.py"), "--check"], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_readme_gives_the_two_commands():
    text = (ROOT / "README.md").read_text()
    assert "make demo" in text and "make test" in text


def test_public_names():
    import diffstyler as ds
    for name in ds.__all__:
        assert getattr(ds, name) is not None, name
    assert ds.masks.__name__ == "diffstyler.masks"
    try: ds.no_such_name
    except AttributeError as e: assert "no_such_name" in str(e)
    else: raise AssertionError("unknown names must raise AttributeError")


def test_import_and_cli_do_not_load_diffusers():
    # the public names are lazy, so the CLI's --help and bad-input errors need torch only
    code = "import sys, diffstyler, diffstyler.cli; print('diffusers' in sys.modules, 'transformers' in sys.modules)"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0 and r.stdout.split() == ["False", "False"], r.stdout + r.stderr


def test_setup_py_does_not_use_pkg_resources():
    assert "pkg_resources" not in (ROOT / "setup.py").read_text()


def test_tiny_pipeline_loads_offline(monkeypatch):
    import diffstyler as ds
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    pipe = ds.load_pipeline("tiny")
    assert pipe.unet.config.cross_attention_dim == 32
