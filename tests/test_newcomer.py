"""Rough edges a newcomer hits (issue 16, item 4): any scheduler a pipeline carries, the toy model fed a photo, the
FastSAM checkpoint of a transfer, defaults in --help and the command's own words in error messages."""
import warnings
from pathlib import Path

import numpy as np
import pytest
from diffusers import DPMSolverMultistepScheduler, EulerDiscreteScheduler, FlowMatchEulerDiscreteScheduler, PNDMScheduler
from PIL import Image

import diffstyler as ds
from diffstyler.cli import main
from diffstyler.core import InputError
from diffstyler.models import ddim_scheduler
from diffstyler.runs import check_plan, small_model_notice


@pytest.fixture(scope="module")
def pipe(): return ds.load_pipeline("tiny")


def _img(size, seed=0):
    return Image.fromarray((np.random.default_rng(seed).random((size[1], size[0], 3)) * 255).astype("uint8"))


@pytest.mark.parametrize("kind", [DPMSolverMultistepScheduler, EulerDiscreteScheduler, PNDMScheduler])
def test_any_ddpm_scheduler_inverts_like_ddim(pipe, kind):
    "A pipeline with DPMSolver / Euler / PNDM inverts and transfers exactly as with its DDIM (built from the same config)."
    img, ddim = _img((64, 64)), pipe.scheduler
    ref = ds.DiffStyler(pipe).invert(img, 10, 5, progress=False)
    try:
        pipe.scheduler = kind.from_config(ddim.config)
        st = ds.DiffStyler(pipe)
        src = st.invert(img, 10, 5, progress=False)
        assert (src.inverted - ref.inverted).abs().max() == 0
        assert st.transfer(src, prompt="a", progress=False).latents.isfinite().all()
    finally: pipe.scheduler = ddim


def test_flow_matching_scheduler_refused_in_one_line():
    with pytest.raises(InputError, match="has no beta schedule") as e:
        ddim_scheduler(FlowMatchEulerDiscreteScheduler().config)
    assert "\n" not in str(e.value)


def test_small_model_notice(pipe, tmp_path):
    "A photo at least twice a small model's size is announced (with the model to use on a GPU); its own size is not."
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        assert small_model_notice(pipe, _img((512, 384)), "toy")
        assert not small_model_notice(pipe, _img((64, 64)), "toy")
    assert len(w) == 1 and "--model sd21-base" in str(w[0].message) and "64 px" in str(w[0].message)


def test_cli_warns_once_about_a_photo_on_the_toy_model(tmp_path, capsys):
    photo = tmp_path / "photo.png"; _img((256, 200)).save(photo)
    code = main(["invert", str(photo), "--out", str(tmp_path / "s.safetensors"), "--model", "tiny", "--quiet",
                 "--inversion-steps", "4", "--steps", "2"])
    err = capsys.readouterr().err
    assert code == 0 and err.count("works at 64 px") == 1 and "--model sd21-base" in err


def test_transfer_takes_a_fastsam_checkpoint(tmp_path):
    "A text-prompt mask checks the FastSAM file the user names (a missing one is named in the error)."
    content = tmp_path / "c.png"; _img((64, 64)).save(content)
    lora = tmp_path / "l.safetensors"
    from safetensors.torch import save_file
    import torch
    save_file({"unet.up_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q.lora_A.weight": torch.zeros(4, 32),
               "unet.up_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q.lora_B.weight": torch.zeros(32, 4)}, str(lora))
    plan = dict(content=content, loras=[str(lora)], masks=["text:a deer"], out=tmp_path / "o.png",
                fastsam_checkpoint=tmp_path / "missing-FastSAM.pt")
    with pytest.raises(InputError, match="missing-FastSAM.pt"): check_plan(plan)
    code = main(["transfer", str(content), "--lora", str(lora), "--mask", "text:a deer", "--out", str(tmp_path / "o.png"),
                 "--fastsam-checkpoint", str(tmp_path / "missing-FastSAM.pt"), "--model", "tiny", "--quiet"])
    assert code == 2


def test_errors_use_the_commands_options(tmp_path, capsys):
    "An interrupted training's folder: the library says resume=True / save_to, the command says --resume / --out."
    style = tmp_path / "s.png"; _img((64, 64)).save(style)
    out = tmp_path / "lora"; (out / "checkpoint-000010").mkdir(parents=True)
    code = main(["train-lora", str(style), "--prompt", "painting of <sss>", "--out", str(out), "--model", "tiny",
                 "--quiet", "--steps", "2"])
    err = capsys.readouterr().err
    assert code == 2 and "--resume" in err and "resume=True" not in err and "save_to" not in err, err


def test_help_shows_defaults(capsys):
    assert main(["transfer", "--help"]) == 0
    out = capsys.readouterr().out
    assert "(default: paper)" in out and "(default: 0)" in out
