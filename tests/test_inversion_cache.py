"""Issue 19: the preset-driven source cache (record default, official presets, offload) through whole transfers, its file
round trip, and fixed-point inversion on the trained toy model."""
import numpy as np
import pytest
import torch
from PIL import Image
import diffstyler as ds
from diffstyler.core import InjectionConfig, InputError
from diffstyler.inversion import invert, cache_keys, cache_bytes, OffloadedStore, SourceTrajectory

STEPS, INV = 6, 20


@pytest.fixture(scope="module")
def styler():
    return ds.DiffStyler(ds.load_pipeline("tiny"))


@pytest.fixture(scope="module")
def content():
    rng = np.random.default_rng(5)
    return Image.fromarray(np.kron(rng.integers(0, 255, (8, 8, 3)), np.ones((8, 8, 1))).astype(np.uint8))


@pytest.fixture(scope="module")
def full(styler, content):
    return invert(styler.pipe, content, INV, STEPS, record="all", progress=False)


@pytest.fixture(scope="module")
def default(styler, content):
    return invert(styler.pipe, content, INV, STEPS, progress=False)


def test_default_cache_is_what_paper_reads_and_renders_the_same(styler, full, default):
    assert set(default.store.data) == cache_keys(InjectionConfig.paper(), STEPS) < set(full.store.data)
    assert default.store.nbytes < 0.6 * full.store.nbytes
    a = styler.transfer(full, prompt="red square", progress=False)
    b = styler.transfer(default, prompt="red square", progress=False)
    assert torch.equal(a.latents, b.latents)   # the transfer read nothing that the default cache lacks


def test_offloaded_store_on_cpu_renders_identically(styler, content, default):
    off = invert(styler.pipe, content, INV, STEPS, offload=True, progress=False)
    assert isinstance(off.store, OffloadedStore)
    a = styler.transfer(default, prompt="red square", progress=False)
    b = styler.transfer(off, prompt="red square", progress=False)
    assert torch.equal(a.latents, b.latents)
    assert (off.store._stream, off.store.copies, off.store.gpu_nbytes) == (None, 0, 0)   # on the CPU: nothing to prefetch
    c = styler.transfer(default.offloaded(), prompt="red square", progress=False)
    assert torch.equal(a.latents, c.latents)


def test_official_presets_record_nothing_and_run(styler, content, full):
    off = invert(styler.pipe, content, INV, STEPS, record=["official", "official_2024"], progress=False)
    assert len(off.store) == 0 and off.store.nbytes == 0
    for cfg in (InjectionConfig.official(STEPS), InjectionConfig.official_2024(STEPS)):
        a = styler.transfer(off, prompt="red square", config=cfg, progress=False)
        b = styler.transfer(full, prompt="red square", config=cfg, progress=False)
        assert torch.equal(a.latents, b.latents)


def test_transfer_beyond_the_cache_stops_before_compute(styler, default):
    steps = []
    cfg = InjectionConfig.paper(STEPS, feature_layers=(2, 3, 4))
    with pytest.raises(InputError, match=r"lacks what config 'paper \(changed\)' reads: feature of layers 2, 3 at steps 0-3"):
        styler.transfer(default, prompt="red square", config=cfg, progress=False, callback=lambda i, z: steps.append(i))
    assert steps == []   # refused before the first step
    with pytest.raises(InputError, match="invert again with record=<this config>"):
        default.check_covers(cfg)


def test_list_record_covers_each_config(styler, content):
    more = InjectionConfig.paper(STEPS, feature_steps=STEPS).replace(name="longer")
    src = invert(styler.pipe, content, INV, STEPS, record=["paper", more], progress=False)
    src.check_covers(InjectionConfig.paper(STEPS)); src.check_covers(more)
    assert src.recorded.name == "paper+longer"
    assert src.store.nbytes == cache_bytes(src.recorded.keys, styler.pipe.unet.config, tuple(src.latents.shape[-2:]), 77, 4)


def test_saved_cache_keeps_its_plan(default, tmp_path):
    path = default.save(tmp_path / "src.safetensors")
    back = SourceTrajectory.load(path)
    assert back.recorded == default.recorded and set(back.store.data) == set(default.store.data)
    back.check_covers(InjectionConfig.paper(STEPS))
    with pytest.raises(InputError, match="recorded for 'paper'"):
        back.check_covers(InjectionConfig.paper(STEPS, feature_steps=STEPS))
    off = SourceTrajectory.load(path, offload=True)
    assert isinstance(off.store, OffloadedStore) and set(off.store.data) == set(default.store.data)


def test_fixed_point_inversion_on_the_toy_model():
    "Trained toy model, 25 sampling steps: 2 fixed-point iterations at 25 inversion steps reconstruct within 1 dB of 250 plain steps."
    from diffstyler.toy import render_scene, psnr
    from diffstyler.models import decode_latents
    from diffstyler.core import postprocess_image
    toy = ds.load_pipeline("toy")
    scene = render_scene([("circle", "blue"), ("square", "red")], "white", "flat", seed=1)[0]
    rec = lambda n, k: psnr(scene, postprocess_image(decode_latents(toy, invert(toy, scene, n, 25, record=None, progress=False,
                                                                                fixed_point_iters=k).latents[-1:])))
    plain25, plain250, fp25 = rec(25, 0), rec(250, 0), rec(25, 2)
    assert fp25 > plain25 + 3 and fp25 > plain250 - 1, (plain25, plain250, fp25)
