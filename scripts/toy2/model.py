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
    path = Path(path)
    f32 = dict(torch_dtype=torch.float32, local_files_only=True)
    pipe = StableDiffusionPipeline(vae=PCAVAE.from_pretrained(str(path / "vae"), **f32),
                                   unet=UNet2DConditionModel.from_pretrained(str(path / "unet"), **f32),
                                   text_encoder=CLIPTextModel.from_pretrained(str(path / "text_encoder"), **f32),
                                   tokenizer=CLIPTokenizer.from_pretrained(str(path / "tokenizer"), local_files_only=True),
                                   scheduler=DDIMScheduler.from_pretrained(str(path / "scheduler"), local_files_only=True),
                                   safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.register_to_config(_name_or_path=str(path))
    pipe.set_progress_bar_config(disable=True)
    for m in (pipe.unet, pipe.vae, pipe.text_encoder): m.eval().requires_grad_(False)
    return pipe
