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
    for name in ("load_pipeline", "InjectionConfig"):
        assert hasattr(ds, name), name


def test_setup_py_does_not_use_pkg_resources():
    assert "pkg_resources" not in (ROOT / "setup.py").read_text()


def test_tiny_pipeline_loads_offline(monkeypatch):
    import diffstyler as ds
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    pipe = ds.load_pipeline("tiny")
    assert pipe.unet.config.cross_attention_dim == 32
