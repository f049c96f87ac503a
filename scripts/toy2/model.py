"""The second toy model (prototype): SD 2.1's UNet topology on a 24-channel PCA latent, v-prediction, the frozen random
CLIP text encoder of diffstyler.toy; built, saved and loaded as a diffusers StableDiffusionPipeline."""
from __future__ import annotations
import json, os, shutil, tempfile
from pathlib import Path
import torch
from diffusers import StableDiffusionPipeline, UNet2DConditionModel, DDIMScheduler
from transformers import CLIPTextModel, CLIPTokenizer
from diffstyler.models import write_clip_tokenizer, ddim_scheduler, SD21_SCHEDULER
from diffstyler.toy import toy_unet_config, toy_text_encoder
from world import WORDS, PCAVAE, fit_pca_vae


def build_pipeline(seed: int = 0, widths=(32, 64, 64, 64), heads=(2, 2, 2, 2), latent_channels: int = 24,
                   prediction_type: str = "v_prediction", tok_dir=None) -> StableDiffusionPipeline:
    tok = write_clip_tokenizer(tok_dir or tempfile.mkdtemp(prefix="toy2tok-"), WORDS, model_max_length=32)
    te = toy_text_encoder(tok, seed=seed)
    vae = fit_pca_vae(latent_channels)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        unet = UNet2DConditionModel(**toy_unet_config(widths, heads, latent_channels))
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=te, tokenizer=tok, unet=unet,
                                   scheduler=ddim_scheduler({**SD21_SCHEDULER, "prediction_type": prediction_type}),
                                   safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def shifted_scheduler(config, shift: float = 16.0, zero_snr: bool = True) -> DDIMScheduler:
    """SD 2.1's DDIM schedule with every step's signal-to-noise ratio multiplied by `shift` (logit(abar) + log shift),
    then rescaled to zero terminal SNR (Lin et al. 2024, diffusers' `rescale_betas_zero_snr`).

    Why: a picture's layout survives noise in proportion to how many latent pixels carry it. The toy's latent is 16x16,
    SD's at 512 px is 64x64, so at the same timestep the toy has lost more of its layout (simple diffusion, Hoogeboom et
    al. 2023: shift the log-SNR by 2 log of the resolution ratio). With the shift (x16), sqrt(abar) at t = 961/721/481/241
    is 0.082/0.647/0.911/0.981 (SD: 0.085/0.266/0.550/0.830): the first sampling step keeps SD's noise level.
    Measured (run r6 against r5, probe.py settle and eval.py): background from noise 0.71 -> 0.96, but the layout of a
    styled picture did not visibly settle earlier (IoU of step 10's predicted z0 with the final picture 0.66 in both)."""
    import math
    base = DDIMScheduler.from_config(config, trained_betas=None, rescale_betas_zero_snr=False)  # kwargs override the config
    acp = base.alphas_cumprod.double()
    acp2 = torch.sigmoid(torch.logit(acp) + math.log(shift))
    betas = 1 - acp2 / torch.cat([torch.ones(1, dtype=acp2.dtype), acp2[:-1]])
    return DDIMScheduler.from_config(config, trained_betas=[float(b) for b in betas], rescale_betas_zero_snr=zero_snr)


def save_pipeline(pipe, unet, out_dir, fp16: bool = True):
    "Save vae/unet/text_encoder/tokenizer/scheduler (safetensors, fp16 UNet and text encoder) atomically to `out_dir`."
    out_dir = Path(out_dir); out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        dt = torch.float16 if fp16 else torch.float32
        import copy
        u = copy.deepcopy(unet).cpu().to(dt); u.save_pretrained(str(tmp / "unet"), safe_serialization=True)
        te = copy.deepcopy(pipe.text_encoder).cpu().to(dt); te.save_pretrained(str(tmp / "text_encoder"), safe_serialization=True)
        pipe.vae.save_pretrained(str(tmp / "vae"), safe_serialization=True)  # float32: 5 KB
        pipe.tokenizer.save_pretrained(str(tmp / "tokenizer"))
        pipe.scheduler.save_pretrained(str(tmp / "scheduler"))
        (tmp / "model_index.json").write_text(json.dumps({
            "_class_name": "StableDiffusionPipeline", "vae": ["diffstyler", "PCAVAE"], "unet": ["diffusers", "UNet2DConditionModel"],
            "text_encoder": ["transformers", "CLIPTextModel"], "tokenizer": ["transformers", "CLIPTokenizer"],
            "scheduler": ["diffusers", "DDIMScheduler"], "safety_checker": [None, None], "feature_extractor": [None, None],
            "requires_safety_checker": False}, indent=1))
        old = out_dir.with_name(out_dir.name + ".old")
        if old.exists(): shutil.rmtree(old)
        if out_dir.exists(): os.replace(out_dir, old)
        os.replace(tmp, out_dir)
        if old.exists(): shutil.rmtree(old)
    finally:
        if tmp.exists(): shutil.rmtree(tmp)
    return out_dir


def load_pipeline(path) -> StableDiffusionPipeline:
    "A saved second-toy-world pipeline (float32, CPU), through the package's toy loader with this world's PCA VAE."
    from diffstyler.toy import load_toy_pipeline
    return load_toy_pipeline(path, vae_class=PCAVAE)
