"""diffstyler.analysis on the tiny random pipeline: PCA across LoRAs (Fig. 3) and the ablation grids (Fig. 6, 7)."""
import numpy as np
import pytest
import torch

from diffstyler.core import InjectionConfig, InputError
from diffstyler.models import load_pipeline
from diffstyler.lora import train_lora
from diffstyler.transfer import DiffStyler
from diffstyler.toy import render_scene
from diffstyler import analysis as A

torch.set_num_threads(1)
N = 4  # sampling steps: tiny on purpose (1000 / N must be a multiple of 1000 / inversion steps)


@pytest.fixture(scope="module")
def world():
    pipe = load_pipeline("tiny")
    content = render_scene([("circle", "red")], "white", "flat", seed=3)[0]
    style = render_scene([("square", "blue")], "white", "stripes", seed=5)[0]
    loras = [train_lora(pipe, style, "a painting in <sss> style", rank=4, alpha=4, steps=1, lr=1e-2, name=n, seed=k,
                        progress=False) for k, n in enumerate(("s1", "s2"))]
    styler = DiffStyler(pipe)
    source = styler.invert(content, num_inversion_steps=8, num_steps=N, record="all", progress=False)
    return dict(pipe=pipe, content=content, style=style, loras=loras, styler=styler, source=source)


def test_pca_shapes_and_similarity_range(world):
    pipe, loras = world["pipe"], world["loras"]
    res = A.pca_across_loras(pipe, world["content"], loras, layers=range(12), t=540, seed=0)
    assert res.models == ["SD", "s1", "s2"] and res.layers == tuple(range(12))
    for l in res.layers:
        M, C, H, W = res.features[l].shape
        assert M == 3 and res.rgb[l].shape == (3, H, W, 3)
        assert 0 <= res.rgb[l].min() and res.rgb[l].max() <= 1
    assert res.cka.shape == (3, 3, 12) and res.cosine.shape == (2, 12) and res.cka_to_base.shape == (2, 12)
    spatial = np.array([res.features[l].shape[-1] * res.features[l].shape[-2] > 1 for l in res.layers])
    assert spatial[3:].all() and not spatial[:3].any()          # SD topology at 64 px: layers 0-2 are 1x1
    s = res.cka[..., spatial]
    assert np.isfinite(s).all() and (s >= 0).all() and (s <= 1 + 1e-9).all()
    assert np.isnan(res.cka_to_base[:, ~spatial]).all()        # 1x1 maps: CKA undefined, reported as n/a
    assert ((res.cosine >= -1 - 1e-9) & (res.cosine <= 1 + 1e-9)).all()
    assert (res.cka_to_base[:, spatial] < 1 - 1e-9).any()      # the LoRAs changed something
    assert "CKA s1 vs SD" in res.table() and "n/a" in res.table()
    png = res.png()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) < 400_000
    # the same seed gives the same features; the base row equals a plain base-UNet call
    z = A.noisy_latent(pipe, world["content"], 540, 0)
    base = A.decoder_features(pipe, z, 540, layers=[7])
    np.testing.assert_allclose(res.features[7][0], base[7].numpy(), atol=1e-6)


def test_pca_bad_input(world):
    with pytest.raises(InputError, match="decoder layers 0..11"):
        A.pca_across_loras(world["pipe"], world["content"], world["loras"], layers=[12])
    with pytest.raises(InputError, match="t=1000"):
        A.pca_across_loras(world["pipe"], world["content"], world["loras"], t=1000)
    with pytest.raises(InputError, match="no LoRA adapter named 'nope'"):
        A.pca_across_loras(world["pipe"], world["content"], ["nope"])


def test_linear_cka_properties():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(8, 6, 6, generator=g)
    q, _ = torch.linalg.qr(torch.randn(8, 8, generator=g))
    assert A.linear_cka(a, a) == pytest.approx(1.0)
    assert A.linear_cka(a, 2 * torch.einsum("ij,jhw->ihw", q, a) + 1) == pytest.approx(1.0)
    assert A.linear_cka(a, torch.randn(8, 6, 6, generator=g)) < 0.7


def test_ablation_grid_shape_labels_and_one_source(world):
    styler, source = world["styler"], world["source"]
    n_inv = styler.counts["invert"]
    cfg = InjectionConfig.paper(N, guidance_scale=1.0)
    g = A.ablation_grid(styler, source, world["loras"][0], "a painting in <sss> style", config=cfg,
                        combos=("none", "F+SA+CA"), progress=False)
    assert g.shape == (4, 2)
    assert g.row_labels == ["SD", "SD+LoRA", "SD+prompt", "SD+LoRA+prompt"] and g.col_labels == ["none", "F+SA+CA"]
    assert len(g.images) == 4 and all(len(r) == 2 for r in g.images)
    assert g.configs[1][0].feature_steps == 0 and g.configs[1][1].feature_steps == cfg.feature_steps
    d = g.metric("d")
    assert d.shape == (4, 2) and np.isfinite(d).all() and d[0, 0] < 1e-8   # SD, no prompt, no injection = reconstruction
    assert "IoU" not in g.metrics[0][0]                                     # not the toy model: latent distance only
    toy = A.steps_grid(styler, source, "s1", "a painting in <sss> style", feature_steps=(2,), attention_steps=(2,), config=cfg,
                       metric="toy", content=world["content"], style_image=world["style"], progress=False)
    assert set(toy.metrics[0][0]) == {"IoU", "style", "d"} and 0 <= toy.metric("IoU").min() <= toy.metric("IoU").max() <= 1
    s = A.steps_grid(styler, source, "s1", "a painting in <sss> style", feature_steps=(0, 4), attention_steps=(3,),
                     config=cfg, progress=False)
    assert s.shape == (2, 1) and s.row_labels == ["F 0", "F 4"] and s.col_labels == ["A 3"]
    assert (s.configs[1][0].feature_steps, s.configs[1][0].attention_steps) == (4, 3)
    assert s.png()[:4] == b"\x89PNG"
    assert styler.counts["invert"] == n_inv
    with pytest.raises(InputError, match="combo 'F\\+XA'"):
        A.ablation_grid(styler, source, "s1", "x", combos=("F+XA",))
    with pytest.raises(InputError, match="0..4"):
        A.ablation_grid(styler, source, "s1", "x", figure=7, feature_steps=(5,))
    with pytest.raises(InputError, match="metric='psnr'"):
        A.ablation_grid(styler, source, "s1", "x", combos=("none",), metric="psnr", progress=False)
    with pytest.raises(InputError, match="figure=5"):
        A.ablation_grid(styler, source, "s1", "x", figure=5)
