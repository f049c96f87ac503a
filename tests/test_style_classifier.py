"""The toy world's frozen style classifier: the shipped weights, their packaging, the inputs it takes, its errors,
and its accuracy on pictures it was not trained on (other layouts, pixel noise). No training here."""
import json, shutil, subprocess, sys
from pathlib import Path
import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open
from safetensors.torch import save_file

from diffstyler.core import InputError
from diffstyler.toy.world import STYLES, SHAPES, COLORS, BACKGROUNDS, ToyShapes, render_scene
from diffstyler.toy.metrics import (StyleNet, STYLE_CLASSIFIER_FILE, classify_style, style_probabilities,
                                    load_style_classifier)

ROOT = Path(__file__).resolve().parent.parent


def _scenes(style, n, seed, size=64):
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        shapes = [(SHAPES[rng.integers(4)], list(COLORS)[rng.integers(4)]) for _ in range(int(rng.integers(1, 3)))]
        out.append(render_scene(shapes, list(BACKGROUNDS)[rng.integers(3)], style, seed=seed * 1000 + i, size=size)[0])
    return out


def test_shipped_weights_are_small_and_record_styles_and_accuracy():
    assert STYLE_CLASSIFIER_FILE.is_file() and STYLE_CLASSIFIER_FILE.stat().st_size <= 300 * 1024
    with safe_open(str(STYLE_CLASSIFIER_FILE), "pt") as f: meta = f.metadata()
    assert json.loads(meta["styles"]) == list(STYLES)
    acc = json.loads(meta["accuracy"])  # measured by scripts/train_style_classifier.py on held-out renders
    assert set(acc) == set(STYLES) and min(acc.values()) >= 0.95


def test_weights_ship_with_the_package(tmp_path):
    # build the package from a copy of the sources (setup.py's own package_data / MANIFEST rules), not the checkout's egg-info
    src = tmp_path / "src"
    shutil.copytree(ROOT / "diffstyler", src / "diffstyler", ignore=shutil.ignore_patterns("__pycache__"))
    for f in ("setup.py", "settings.ini", "README.md", "LICENSE", "MANIFEST.in"): shutil.copy(ROOT / f, src / f)
    r = subprocess.run([sys.executable, "setup.py", "-q", "build_py", "-d", str(tmp_path / "out")], cwd=src,
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    built = tmp_path / "out" / "diffstyler" / "assets" / "toy" / STYLE_CLASSIFIER_FILE.name
    assert built.read_bytes() == STYLE_CLASSIFIER_FILE.read_bytes()


def test_every_style_is_named_on_clean_renders():
    names = classify_style([im for s in STYLES for im in _scenes(s, 10, seed=77)])
    truth = [s for s in STYLES for _ in range(10)]
    acc = np.mean([a == b for a, b in zip(names, truth)])
    assert acc >= 0.95, list(zip(truth, names))


def test_other_layouts_and_noise():
    # layouts the classifier was not trained on; generated pictures carry noise: the classifier must not care
    g = torch.Generator().manual_seed(0)
    x, truth = [], []
    for k, s in enumerate(STYLES):
        imgs, _ = ToyShapes(900 + k, styles=(s,)).batch(0, 10)
        x.append((imgs + torch.randn(imgs.shape, generator=g) * 6 / 127.5).clamp(-1, 1)); truth += [s] * 10
    names = classify_style(torch.cat(x))  # a float batch [N,3,64,64] in [-1,1]
    assert np.mean([a == b for a, b in zip(names, truth)]) >= 0.9


def test_inputs_of_every_kind_and_size_agree():
    im, _, _ = render_scene([("star", "green"), ("circle", "red")], "black", "stripes", seed=3)
    big, _, _ = render_scene([("star", "green"), ("circle", "red")], "black", "stripes", seed=3, size=128)
    arr = np.asarray(im)
    t = torch.from_numpy(arr.copy()).permute(2, 0, 1).float() / 127.5 - 1
    p = style_probabilities([im, arr, arr.astype(np.float32) / 255, t, big])
    assert p.shape == (5, len(STYLES)) and np.allclose(p.sum(1), 1, atol=1e-5)
    assert np.allclose(p[0], p[1]) and np.allclose(p[0], p[2], atol=1e-4) and np.allclose(p[0], p[3], atol=1e-4)
    assert classify_style([im, big]) == ["stripes", "stripes"] and classify_style(im) == ["stripes"]
    assert all(n == "checker" for n in classify_style(_scenes("checker", 4, seed=5, size=128)))


def test_bad_inputs_and_files_raise_one_line_errors(tmp_path):
    with pytest.raises(InputError, match="empty"): classify_style([])
    with pytest.raises(InputError, match="not RGB"): classify_style([np.zeros((64, 64), np.uint8)])
    with pytest.raises(InputError, match="missing"): classify_style(render_scene()[0], path=tmp_path / "none.safetensors")
    bad = tmp_path / "bad.safetensors"; bad.write_bytes(STYLE_CLASSIFIER_FILE.read_bytes()[:500])
    with pytest.raises(InputError, match="damaged") as e: load_style_classifier(bad)
    assert "\n" not in str(e.value)
    other = tmp_path / "other.safetensors"
    save_file(StyleNet().state_dict(), str(other), metadata={"styles": json.dumps(list(STYLES[::-1]))})
    with pytest.raises(InputError, match="names styles"): load_style_classifier(other)


def test_loaded_once_and_the_weights_matter(tmp_path):
    assert load_style_classifier() is load_style_classifier(STYLE_CLASSIFIER_FILE)
    # an untrained net with the right metadata loads, but names the styles no better than chance: the accuracy above
    # comes from the shipped weights
    torch.manual_seed(0)
    untrained = tmp_path / "untrained.safetensors"
    save_file(StyleNet().state_dict(), str(untrained), metadata={"styles": json.dumps(list(STYLES))})
    images = [im for s in STYLES for im in _scenes(s, 5, seed=78)]
    truth = [s for s in STYLES for _ in range(5)]
    acc = np.mean([a == b for a, b in zip(classify_style(images, path=untrained), truth)])
    assert acc <= 0.5
