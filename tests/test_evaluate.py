"""Evaluation metrics against independent computations (StyleID's CFSD written literally, FID in closed form with
scipy, torchmetrics' SSIM class), on random-weight backbones; pretrained weights fail in one line when absent."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy import linalg

from diffstyler.core import InputError, ModelNotAvailableError
from diffstyler.evaluate import (Evaluator, VGGFeatures, artfid, cfsd_from_features, fid_from_features, summarize, to_batch)
from diffstyler.toy import render_scene


@pytest.fixture(scope="module")
def images():
    content = render_scene([("circle", "red"), ("square", "blue")], "white", "flat", seed=1, size=64)[0]
    style = render_scene([("star", "yellow")], "black", "stripes", seed=2, size=64)[0]
    other = render_scene([("triangle", "green")], "gray", "dots", seed=3, size=64)[0]
    return content, style, other


@pytest.fixture(scope="module")
def ev():
    return Evaluator(weights="random", device="cpu", toy=True)


def styleid_cfsd(fo, fc):
    "StyleID's PatchSimi.forward, step by step as in evaluation/image_metrics.py (transpose(1,3), reshape, /c, KL batchmean)."
    def simi(x, log):
        b, c, h, w = x.size()
        f = torch.transpose(x, 1, 3).reshape(b, h * w, c).div(c)
        s = torch.bmm(f, f.transpose(1, 2))
        return (F.log_softmax(s, -1) if log else F.softmax(s, -1)).reshape(b, -1)
    return F.kl_div(simi(fo, True), simi(fc, False), reduction="batchmean")


def test_cfsd_matches_styleid_definition():
    g = torch.Generator().manual_seed(0)
    fo, fc = torch.randn(1, 16, 5, 7, generator=g).double(), torch.randn(1, 16, 5, 7, generator=g).double()
    for rows in (1024, 4):   # whole map, and blocks of rows (the last one short)
        torch.testing.assert_close(cfsd_from_features(fo, fc, rows=rows)[0].double(), styleid_cfsd(fo, fc), rtol=1e-5, atol=1e-6)


def test_fid_matches_closed_form():
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(40, 5)), rng.normal(size=(30, 5)) @ rng.normal(size=(5, 5)) + 0.5
    mu1, mu2, s1, s2 = a.mean(0), b.mean(0), np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    ref = ((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(linalg.sqrtm(s1 @ s2).real)
    assert fid_from_features(a, b) == pytest.approx(ref, rel=1e-6)


def test_ssim_matches_torchmetrics_class(ev, images):
    from torchmetrics.image import StructuralSimilarityIndexMeasure
    content, style, other = images
    m = StructuralSimilarityIndexMeasure(data_range=1.0)
    m.update(to_batch([style, other]), to_batch([content, content]))
    assert ev.ssim([style, other], [content, content]).mean().item() == pytest.approx(m.compute().item(), abs=1e-6)


def test_metric_directions(ev, images):
    content, style, other = images
    same, diff = ev.score(content, content, style), ev.score(style, content, style)
    assert same["lpips"] < 1e-6 < diff["lpips"] and same["ssim"] > 0.999 > diff["ssim"] and same["cfsd"] == 0 < diff["cfsd"]
    assert diff["gram"] < 1e-9 < same["gram"]
    assert same["content_iou"] == 1.0 and diff["content_iou"] < 0.5
    # per-pair values are independent of the batch they are computed in
    batch = ev.lpips([content, style, other], [content, content, content])
    assert batch[1].item() == pytest.approx(diff["lpips"], rel=1e-5)
    # an output of another size is compared at the content's size
    assert ev.lpips(style.resize((48, 48)), content).shape == (1,)


def test_gram_and_vgg_layers():
    vgg = VGGFeatures("random", seed=0)
    feats = vgg(torch.rand(1, 3, 32, 32))
    assert list(feats) == ["relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1"]
    assert [f.shape[1] for f in feats.values()] == [64, 128, 256, 512, 512]
    assert all((f >= 0).all() for f in feats.values())      # after the ReLUs
    torch.testing.assert_close(VGGFeatures("random", seed=0)(torch.ones(1, 3, 16, 16))["relu3_1"], vgg(torch.ones(1, 3, 16, 16))["relu3_1"])


def test_bad_inputs(ev, images):
    content, style, _ = images
    with pytest.raises(InputError, match="weights='imagenet'"): Evaluator(weights="imagenet")
    with pytest.raises(InputError, match="metric 'psnr'"): Evaluator(weights="random", metrics=("psnr",))
    with pytest.raises(InputError, match="lpips_net"): Evaluator(weights="random", lpips_net="resnet")
    with pytest.raises(InputError, match="2 outputs but 1 content"): ev.lpips([content, style], [content])
    with pytest.raises(InputError, match="does not exist"): ev.lpips("/nonexistent.png", content)


def test_summarize_artfid():
    rows = [dict(preset="a", style="s1", lpips=0.1), dict(preset="a", style="s2", lpips=0.3), dict(preset="b", style="s1", lpips=0.5)]
    f = np.array([[0.0, 0.0], [2.0, 0.0], [1.0, 1.0]])
    t = summarize(rows, f, f + [0.0, 3.0], by="preset")
    assert t[0]["fid"] == pytest.approx(9.0, rel=1e-6) and t[0]["artfid"] == pytest.approx(artfid(0.2, 9.0))
    assert "fid" not in t[1]                                  # one image: no FID
    assert [r["n"] for r in summarize(rows, by=["preset", "style"])] == [1, 1, 1]


@pytest.mark.parametrize("key,needle", [("vgg", "vgg19"), ("lpips", "alexnet"), ("fid", "weights-inception-2015-12-05")])
def test_pretrained_weights_missing_is_one_line(tmp_path, monkeypatch, key, needle):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))       # an empty cache; the conftest blocks every download
    with pytest.raises(ModelNotAvailableError) as e:
        Evaluator(device="cpu")._net(key)
    msg = str(e.value)
    assert needle in msg and str(tmp_path) in msg and "\n" not in msg and "download" in msg


def test_conftest_blocks_downloads():
    with pytest.raises(RuntimeError, match="tried to download"):
        torch.hub.load_state_dict_from_url("https://example.org/weights.pth", model_dir="/tmp/never")


def test_missing_eval_extra_is_one_line(monkeypatch):
    import importlib.util
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a, **k: None if name in ("torchmetrics", "accelerate") else real(name, *a, **k))
    with pytest.raises(ModelNotAvailableError, match=r"'torchmetrics'.*pip install 'diffstyler\[eval\]'"):
        Evaluator(weights="random")
    from diffstyler.grid import run_grid
    with pytest.raises(ModelNotAvailableError, match=r"'accelerate'"):
        run_grid(dict(contents=[], styles=[]))
