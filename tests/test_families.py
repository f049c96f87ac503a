"""The method on every SD 1.x/2.x family: random-weight pipelines built from each family's real configs (tests/sd_configs.py,
widths reduced for CPU speed, structure kept): epsilon and v-prediction, 512 and 768 px models, SD 1.x's 768-wide and
SD 2.x's 1024-wide text encoders. Each runs LoRA training, inversion, the paper's transfer and the official transfer."""
import numpy as np
import pytest
import torch
from PIL import Image
from diffusers import PNDMScheduler, DDIMScheduler

import diffstyler as ds
from diffstyler.hooks import decoder_layers, attention_layer_indices, check_sd_unet
from diffstyler.models import random_pipeline, image_size, load_pipeline
from diffstyler.registry import MODELS
from sd_configs import FAMILIES, reduced

STEPS, INV = 4, 20


def family_pipeline(family: str, tmp_path=None):
    "Build the family's reduced pipeline; with tmp_path, save it with the family's own scheduler class and load it back."
    c = reduced(family)
    pipe = random_pipeline(c["unet"], c["vae"], text_config=c["text_encoder"], scheduler_config=c["scheduler"], seed=1)
    if tmp_path is None: return pipe
    cls = {"PNDMScheduler": PNDMScheduler, "DDIMScheduler": DDIMScheduler}[c["scheduler"]["_class_name"]]
    pipe.scheduler = cls.from_config(c["scheduler"])   # as the real repository ships it
    pipe.save_pretrained(tmp_path)
    return load_pipeline(str(tmp_path), device="cpu", dtype="float32")


def picture(size: int, seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(np.kron(rng.integers(0, 255, (size // 16, size // 16, 3)), np.ones((16, 16, 1))).astype(np.uint8))


def test_real_configs_match_the_registry():
    for name, c in FAMILIES.items():
        e = MODELS[name]
        assert c["unet"]["sample_size"] * 8 == e.size, name
        assert c["scheduler"].get("prediction_type", "epsilon") == e.prediction_type, name
        assert c["unet"]["cross_attention_dim"] == {"sd1": 768, "sd2": 1024}[e.family], name
        assert c["text_encoder"]["hidden_size"] == c["unet"]["cross_attention_dim"], name


def test_sd20_base_and_sd21_base_share_their_configs():
    assert FAMILIES["sd20-base"] == FAMILIES["sd21-base"]


def test_full_size_topologies_pass_the_check():
    "The real, full-size UNets (built on the meta device: no memory, no weights) pass the topology check with 12 layers."
    from diffusers import UNet2DConditionModel
    for name, c in FAMILIES.items():
        with torch.device("meta"): unet = UNet2DConditionModel(**c["unet"])
        check_sd_unet(unet)
        assert len(decoder_layers(unet)) == 12 and attention_layer_indices(unet) == tuple(range(3, 12)), name


# sd20-base has exactly sd21-base's configs (checked above), so running the method once covers both
@pytest.mark.parametrize("family", ["sd15", "sd21-base", "sd21"])
def test_family_runs_the_method(family, tmp_path):
    pipe = family_pipeline(family, tmp_path / "pipe" if family in ("sd15", "sd21") else None)
    c, e = reduced(family), MODELS[family]
    sched = pipe.scheduler
    assert type(sched).__name__ == "DDIMScheduler" and sched.config.prediction_type == e.prediction_type
    assert pipe.unet.config.cross_attention_dim == pipe.text_encoder.config.hidden_size == c["unet"]["cross_attention_dim"]
    assert pipe.unet.config.upcast_attention == c["unet"].get("upcast_attention", False)
    size = image_size(pipe)
    assert size == c["unet"]["sample_size"] * 8

    styler = ds.DiffStyler(pipe)   # the decoder-layer map accepts the family
    assert attention_layer_indices(pipe.unet) == tuple(range(3, 12))
    lora = styler.train_lora(picture(size, 1), "painting of <sss>", rank=4, steps=2, progress=False, name="style")
    assert len(lora.loss_history) == 2 and np.isfinite(lora.loss_history).all()
    source = styler.invert(picture(size, 2), INV, STEPS, progress=False)
    assert source.latents.shape == (STEPS + 1, 4, size // 8, size // 8) and torch.isfinite(source.latents).all()

    # the hooks are an identity on the LoRA-free UNet: injecting its own features and attention changes nothing
    same = styler.transfer(source, prompt="", guidance_scale=1.0, config=ds.InjectionConfig.paper(STEPS), progress=False)
    assert torch.allclose(same.latents, source.latents[-1:], atol=1e-4), (same.latents - source.latents[-1:]).abs().max()

    paper = styler.transfer(source, style=lora, prompt="painting of <sss>", config=ds.InjectionConfig.paper(STEPS), progress=False)
    official = styler.transfer(source, style=lora, prompt="painting of <sss>", config=ds.InjectionConfig.official(STEPS),
                               progress=False)
    for r in (paper, official):
        assert r.image.size == (size, size) and torch.isfinite(r.latents).all()
    assert not torch.allclose(paper.latents, official.latents)        # the two presets are different methods
    assert not torch.allclose(paper.latents, source.latents[-1:])     # the LoRA and the prompt do something


@pytest.mark.parametrize("which", ["sdxl", "sd2-inpainting"])
def test_other_unets_are_refused_in_one_line(which):
    "The real SDXL and SD 2 inpainting UNets (on the meta device) are refused by the method before anything runs."
    from types import SimpleNamespace
    from diffusers import UNet2DConditionModel
    from sd_configs import SDXL_UNET, SD2_INPAINT_UNET
    with torch.device("meta"): unet = UNet2DConditionModel(**(SDXL_UNET if which == "sdxl" else SD2_INPAINT_UNET))
    with pytest.raises(ds.InputError) as e: ds.DiffStyler(SimpleNamespace(unet=unet))
    msg = str(e.value)
    assert "\n" not in msg and "not SD 1.x/2.x-shaped" in msg and "sd21-base" in msg
    if which == "sdxl":
        assert "(it looks like SDXL)" in msg and "3 up blocks, not 4" in msg and "10 transformer layers per block" in msg
    else:
        assert "9 input channels for 4 output channels" in msg
