"""diffstyler.widgets driven headless on the tiny random pipeline: controls re-render from the cached source only."""
import numpy as np
import pytest
import torch
from PIL import Image

import diffstyler.inversion as inversion
from diffstyler.core import InjectionConfig, InputError
from diffstyler.models import load_pipeline
from diffstyler.lora import train_lora
from diffstyler.transfer import DiffStyler
from diffstyler.toy import render_scene
from diffstyler.widgets import InjectionExplorer, FusionExplorer, png_bytes

torch.set_num_threads(1)
N = 4  # sampling steps (tiny on purpose)
PROMPT = "a painting in <sss> style"


@pytest.fixture(scope="module")
def world():
    pipe = load_pipeline("tiny")
    content, caption, masks = render_scene([("circle", "red"), ("square", "blue")], "white", "flat", seed=2)
    style = render_scene([("triangle", "green")], "white", "stripes", seed=5)[0]
    lora = train_lora(pipe, style, PROMPT, rank=4, alpha=4, steps=1, lr=1e-2, name="w1", progress=False)
    lora2 = train_lora(pipe, style, PROMPT, rank=4, alpha=4, steps=1, lr=1e-2, name="w2", seed=1, progress=False)
    styler = DiffStyler(pipe)
    source = styler.invert(content, num_inversion_steps=8, num_steps=N, progress=False)
    return dict(pipe=pipe, content=content, caption=caption, masks=masks, lora=lora, lora2=lora2, styler=styler, source=source)


@pytest.fixture
def calls(monkeypatch):
    "Counts of the expensive upstream functions (DDIM inversion, source pass) during one test."
    n = {"ddim_invert": 0, "source_pass": 0}
    for name in n:
        fn = getattr(inversion, name)
        def wrapper(*a, _fn=fn, _name=name, **k):
            n[_name] += 1
            return _fn(*a, **k)
        monkeypatch.setattr(inversion, name, wrapper)
    return n


def test_injection_explorer_sliders_rerender_from_cache(world, calls):
    styler, source = world["styler"], world["source"]
    inv = styler.counts["invert"]
    ex = InjectionExplorer(styler, source, style=world["lora"], prompt=PROMPT, preset="paper", size=64)
    assert ex.renders == 1 and ex.image.value[:4] == b"\x89PNG"
    assert ex.feature_steps.max == N and ex.attention_steps.max == N
    first = ex.image.value
    ex.feature_steps.value = 0
    ex.attention_steps.value = 0
    assert ex.renders == 3 and ex.image.value != first
    assert ex.progress.value == N and "render 3" in ex.status.value
    plain = styler.transfer(source, style="w1", prompt=PROMPT, progress=False,
                            config=InjectionConfig.paper(N, feature_steps=0, attention_steps=0))
    assert ex.image.value == png_bytes(plain.image, 64)
    ex.self_attention.value = False
    assert ex.renders == 4 and not ex.config.self_attention
    ex.preset.value = "official"                      # one render for the whole preset, not one per control
    assert ex.renders == 5 and ex.config.source == "lora"
    off = InjectionConfig.official(N)
    assert (ex.feature_steps.value, ex.attention_steps.value) == (off.feature_steps, off.attention_steps)
    assert styler.counts["invert"] == inv and calls == {"ddim_invert": 0, "source_pass": 0}
    assert isinstance(ex.snapshot(), Image.Image) and ex.ui.children


def test_stale_render_is_skipped(world, calls):
    styler, source = world["styler"], world["source"]
    ex = InjectionExplorer(styler, source, style="w1", prompt=PROMPT, size=64)
    moved = []
    def drag(i, z):                                    # the user moves the slider while step 1 renders
        if i == 1 and not moved:
            moved.append(i)
            ex.feature_steps.value = 1
    ex.user_callback = drag
    n, s = ex.renders, ex.skipped
    ex.feature_steps.value = 0 if ex.feature_steps.value else 2
    assert (ex.renders - n, ex.skipped - s) == (1, 1)
    want = styler.transfer(source, style="w1", prompt=PROMPT, progress=False, config=ex.config)
    assert ex.config.feature_steps == 1 and ex.image.value == png_bytes(want.image, 64)
    assert all(not L.resnet.conv2._forward_hooks for L in styler.layers)
    assert calls == {"ddim_invert": 0, "source_pass": 0}


def test_explorer_bad_input(world):
    with pytest.raises(InputError, match="SourceTrajectory"):
        InjectionExplorer(world["styler"], "content.png")
    with pytest.raises(InputError, match="preset='fast'"):
        InjectionExplorer(world["styler"], world["source"], preset="fast")


def test_fusion_explorer_two_styles(world, calls, tmp_path):
    styler, source, content, masks = world["styler"], world["source"], world["content"], world["masks"]
    inv = styler.counts["invert"]
    for k, name in enumerate(("circle", "square")):
        Image.fromarray(masks[k].astype(np.uint8) * 255).save(tmp_path / f"{name}.png")
    fx = FusionExplorer(styler, source, content, loras=[world["lora"], world["lora2"]], prompt=PROMPT,
                        caption=world["caption"], size=64, config=InjectionConfig.paper(N, guidance_scale=1.0))
    row = fx.rows[0]
    fx.fuse_button.click()                             # no mask yet: an error in the status line, no render
    assert fx.renders == 0 and "style 1 has no mask" in fx.status.value
    preview = row.preview.value
    row.path.value = str(tmp_path / "circle.png")
    row.button.click()
    assert row.preview.value != preview and int(row.mask.sum()) == int(masks[0].sum())
    fx.fuse_button.click()
    assert fx.renders == 1 and fx.image.value[:4] == b"\x89PNG"
    one = fx.image.value
    row2 = fx.add_style()
    assert row2.adapter == "w2" and len(fx.rows_box.children) == 2
    row2.source.value = "word"
    row2.word.value = "square"
    row2.button.click()                                # cross-attention mask of a caption word
    assert tuple(row2.mask.shape) == (content.height, content.width) and 0 < float(row2.mask.mean()) < 1
    row2.path.value = str(tmp_path / "square.png")
    row2.source.value = "file"
    row2.button.click()
    fx.fuse_button.click()
    assert fx.renders == 2 and fx.image.value != one and len(fx.result.masks) == 2
    assert styler.counts["invert"] == inv and calls == {"ddim_invert": 0, "source_pass": 0}
    with pytest.raises(InputError, match="pass the image you inverted"):
        FusionExplorer(styler, source, content.resize((32, 32)))


def test_fusion_explorer_fastsam_wiring(world, monkeypatch):
    "The FastSAM source passes the point, the checkpoint and the extra arguments to masks.fastsam."
    from diffstyler import masks as M
    seen = {}
    def fake_fastsam(image, points=None, labels=None, checkpoint=None, **kw):
        seen.update(points=points, labels=labels, checkpoint=checkpoint, size=image.size, **kw)
        m = np.zeros((image.height, image.width), np.float32); m[:20, :20] = 1
        return torch.from_numpy(m)
    monkeypatch.setattr(M, "fastsam", fake_fastsam)
    fx = FusionExplorer(world["styler"], world["source"], world["content"], loras=["w1"], checkpoint="FastSAM-s.pt",
                        fastsam_kwargs=dict(imgsz=256), size=64)
    row = fx.rows[0]
    row.source.value = "fastsam"
    row.x.value, row.y.value = 10, 12
    row.button.click()
    assert seen == dict(points=[[10, 12]], labels=[1], checkpoint="FastSAM-s.pt", size=(64, 64), imgsz=256)
    assert int(row.mask.sum()) == 400 and fx.renders == 0


@pytest.fixture(scope="module")
def methods(world):
    "The content recorded for the paper, pnp and styleid presets, and the style image's trajectory (record='styleid')."
    styler = world["styler"]
    style = render_scene([("triangle", "green")], "white", "stripes", seed=5)[0]
    source = styler.invert(world["content"], num_inversion_steps=8, num_steps=N, record=["paper", "pnp", "styleid"], progress=False)
    return dict(source=source, style_source=styler.invert(style, num_inversion_steps=8, num_steps=N, record="styleid", progress=False))


def test_explorer_styleid_with_style_source_renders_without_the_lora(world, methods):
    "styleid renders from the style's trajectory with the base UNet and no prompt, even when the explorer holds a LoRA."
    styler = world["styler"]
    ex = InjectionExplorer(styler, methods["source"], style=world["lora"], prompt=PROMPT, preset="styleid", size=64,
                           style_source=methods["style_source"])
    want = styler.transfer(methods["source"], config=ex.config, style_source=methods["style_source"], progress=False)
    assert ex.renders == 1 and ex.image.value == png_bytes(want.image, 64) and "cannot render" not in ex.status.value
    with_lora = styler.transfer(methods["source"], style="w1", prompt=PROMPT, config=ex.config, style_source=methods["style_source"], progress=False)
    assert ex.image.value != png_bytes(with_lora.image, 64)
    assert "self_k layers 6-11" in ex.rules.value and "from the style" in ex.rules.value
    ex.preset.value = "pnp"                            # pnp: the prompt alone, no LoRA
    plain = styler.transfer(methods["source"], prompt=PROMPT, config=ex.config, progress=False)
    assert ex.renders == 2 and ex.image.value == png_bytes(plain.image, 64)
    ex.preset.value = "paper"                          # DiffStyler's preset: the LoRA, as before
    lora = styler.transfer(methods["source"], style="w1", prompt=PROMPT, config=ex.config, progress=False)
    assert ex.renders == 3 and ex.image.value == png_bytes(lora.image, 64) and ex.rules.value == ""
    with pytest.raises(InputError, match="num_steps=4"):
        InjectionExplorer(styler, methods["source"], preset="styleid", style_source=styler.invert(
            world["content"], num_inversion_steps=8, num_steps=3, record="styleid", progress=False))


def test_explorer_styleid_without_style_source_says_what_to_pass(world, methods):
    "No crash: a one-line message in the status, no picture; the other presets render; styleid again shows the message."
    ex = InjectionExplorer(world["styler"], methods["source"], style=world["lora"], prompt=PROMPT, preset="styleid", size=64)
    assert ex.renders == 0 and ex.result is None and ex.image.value == b""
    assert "cannot render" in ex.status.value and "style_source=styler.invert(style_image" in ex.status.value
    assert "record='styleid'" in ex.status.value and "\n" not in ex.status.value and ex.progress.bar_style == "warning"
    ex.preset.value = "paper"
    assert ex.renders == 1 and ex.result is not None and "render 1" in ex.status.value
    ex.preset.value = "styleid"
    assert ex.renders == 1 and ex.result is None and ex.image.value == b"" and "style_source=" in ex.status.value
    with pytest.raises(InputError, match="nothing rendered"): ex.snapshot()
