"""Files the package writes get the usual permissions: 0o666 less the umask, as `open` gives, not mkstemp's 0o600
(atomic_write writes through a temporary file made by tempfile.mkstemp)."""
import os, stat

import pytest
from PIL import Image

from diffstyler.core import atomic_write, save_image


@pytest.fixture
def umask():
    old = os.umask(0o022)
    def set_(m): os.umask(m)
    yield set_
    os.umask(old)


@pytest.mark.parametrize("mask, mode", [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_saved_image_follows_umask(tmp_path, umask, mask, mode):
    umask(mask)
    p = save_image(Image.new("RGB", (4, 4)), tmp_path / "out.png")
    assert stat.S_IMODE(p.stat().st_mode) == mode
    with open(tmp_path / "ref.txt", "w") as f: f.write("x")          # what a plain open() gives, for comparison
    assert stat.S_IMODE((tmp_path / "ref.txt").stat().st_mode) == mode


def test_atomic_write_text_and_overwrite(tmp_path, umask):
    umask(0o022)
    p = tmp_path / "a.json"
    with atomic_write(p) as t: t.write_text("{}")
    assert stat.S_IMODE(p.stat().st_mode) == 0o644
    with atomic_write(p, overwrite=True) as t: t.write_text("[]")
    assert p.read_text() == "[]" and stat.S_IMODE(p.stat().st_mode) == 0o644
    assert [f.name for f in tmp_path.iterdir()] == ["a.json"]          # no temporary file left behind
