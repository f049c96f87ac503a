#!/usr/bin/env python3
"""GPU check (issue 13): the whole paper pipeline at full Stable Diffusion 2.1-base size, with random weights built from
SD 2.1-base's real configs (tests/sd_configs.py: UNet 866M parameters, VAE, 23-layer OpenCLIP-H text encoder), fp16 at
512 px on CUDA. Stages:

  lora_train      a rank-16 LoRA on Q, K, V, 200 steps (paper section 4), fp32 adapter under fp16 autocast
  invert          DDIM inversion, 1000 steps, empty prompt (+ the source pass of 50 steps that records every decoder layer)
  paper           the paper's transfer (features 4-11 for 30/50 steps, self+cross attention 3-11 for 25/50), CFG 7.5
  rerender        the same after a threshold change (features 20/50): the cached source is reused
  official        the authors' public code's scheme (in-batch source, batch 3 per pass, noise fusion)
  two_style       two LoRAs, two masks (left / right half), latent fusion (eq. 6 and 7)

It prints ONE JSON object: per stage seconds, steps, ms per step and peak GPU memory (GiB, torch.cuda.max_memory_allocated
after a reset at the stage's start), the ratios injected step / plain step (one UNet call of the paper preset at step 0
with every injected kind active, CFG batch 2, vs the same call without hooks) and re-render / first run (first run =
inversion + source pass + paper transfer), and what it ran on. Random weights make the pictures noise: this measures time
and memory, not quality.

`--tiny` (automatic without CUDA) runs the same stages on the CPU with the tiny pipeline (SD 2.1's UNet topology at widths
32-64, 64 px; `diffstyler.models.tiny_pipeline`) and few steps, in well under a minute: tests/test_gpu_check.py runs it so the
script keeps working. (The families' real configs at reduced width are exercised by tests/test_families.py.)

Usage: python bench/gpu_check.py [--tiny] [--out result.json] [--inversion-steps N] [--steps N] [--lora-steps N]"""
import argparse, json, platform, statistics, sys, time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))   # the real configs live beside the tests that check every family
import numpy as np
import torch
from PIL import Image

import diffstyler as ds
from diffstyler.hooks import InjectionController, hooked
from diffstyler.lora import use_adapter
from diffstyler.models import random_pipeline, tiny_pipeline, image_size, encode_text
from sd_configs import FAMILIES


def sync(device):
    if device.type == "cuda": torch.cuda.synchronize(device)


class Stage:
    "Times a block (wall clock, CUDA synchronised) and records the peak GPU memory allocated inside it."
    def __init__(self, results, name, device, steps=None):
        self.results, self.name, self.device, self.steps = results, name, device, steps
    def __enter__(self):
        sync(self.device)
        if self.device.type == "cuda": torch.cuda.reset_peak_memory_stats(self.device)
        self.t0 = time.perf_counter(); return self
    def __exit__(self, *exc):
        sync(self.device)
        s = time.perf_counter() - self.t0
        r = dict(seconds=round(s, 3))
        if self.steps: r.update(steps=self.steps, ms_per_step=round(1000 * s / self.steps, 2))
        if self.device.type == "cuda": r["peak_gib"] = round(torch.cuda.max_memory_allocated(self.device) / 2**30, 2)
        self.results[self.name] = r


def picture(size, seed):
    rng = np.random.default_rng(seed)
    cells = max(size // 64, 2)
    return Image.fromarray(np.kron(rng.integers(0, 255, (cells, cells, 3)), np.ones((size // cells, size // cells, 1))).astype(np.uint8))


@torch.no_grad()
def step_ratio(styler, source, config, lora, device, repeats):
    "Median time of one injected UNet call (paper preset, step 0, CFG batch 2) over one plain call, alternating."
    unet = styler.pipe.unet
    emb = torch.cat([encode_text(styler.pipe, ""), encode_text(styler.pipe, "painting of <sss>")]).to(unet.dtype)
    z = source.inverted[:1].to(device, unet.dtype).expand(2, -1, -1, -1)
    t = source.timesteps[0].to(device)
    ctl = InjectionController(inject=config, source=source.store); ctl.step = 0
    call = lambda: unet(z, t, encoder_hidden_states=emb)
    def timed():
        sync(device); t0 = time.perf_counter(); call(); sync(device); return time.perf_counter() - t0
    ti, tp = [], []
    with use_adapter(unet, lora.name):
        for r in range(repeats + 1):   # alternating; the first round warms up; installing the hooks is outside the timing,
            with hooked(unet, ctl):    # as in a transfer, which installs them once for all its steps
                t_i = timed()
            t_p = timed()
            if r: ti.append(t_i); tp.append(t_p)
    return statistics.median(ti), statistics.median(tp)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tiny", action="store_true", help="reduced width, 64 px, few steps, CPU (automatic without CUDA)")
    ap.add_argument("--device", default=None, help="default: cuda if available, else the tiny run on cpu")
    ap.add_argument("--inversion-steps", type=int, default=None, help="default 1000 (tiny: 50)")
    ap.add_argument("--steps", type=int, default=None, help="sampling steps, default 50 (tiny: 10)")
    ap.add_argument("--lora-steps", type=int, default=None, help="default 200 (tiny: 3)")
    ap.add_argument("--repeats", type=int, default=None, help="repeats of the step-ratio timing, default 20 (tiny: 3)")
    ap.add_argument("--out", default=None, help="also write the JSON to this file")
    a = ap.parse_args(argv)
    device = torch.device(a.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    tiny = a.tiny or device.type != "cuda"
    inv = a.inversion_steps or (50 if tiny else 1000)
    steps = a.steps or (10 if tiny else 50)
    lora_steps = a.lora_steps or (3 if tiny else 200)
    repeats = a.repeats or (3 if tiny else 20)
    dtype = torch.float16 if device.type == "cuda" else torch.float32
    cfg = FAMILIES["sd21-base"]
    stages, t_all = {}, time.perf_counter()

    with Stage(stages, "build", device):
        if tiny: pipe = tiny_pipeline()
        else: pipe = random_pipeline(cfg["unet"], cfg["vae"], text_config=cfg["text_encoder"], scheduler_config=cfg["scheduler"])
        pipe = pipe.to(device=device, dtype=dtype)
    size = image_size(pipe)
    params = {k: round(sum(p.numel() for p in getattr(pipe, k).parameters()) / 1e6, 1) for k in ("unet", "vae", "text_encoder")}
    styler = ds.DiffStyler(pipe)
    content, style_a, style_b = picture(size, 0), picture(size, 1), picture(size, 2)
    prompt = "painting of <sss>"

    with Stage(stages, "lora_train", device, lora_steps):
        lora_a = styler.train_lora(style_a, prompt, rank=16, alpha=16, steps=lora_steps, name="style_a", progress=False)
    lora_b = styler.train_lora(style_b, prompt, rank=16, alpha=16, steps=2, name="style_b", progress=False)   # for two_style only

    with Stage(stages, "invert", device, inv + steps):
        source = styler.invert(content, inv, steps, progress=False)
    stages["invert"].update(inversion_seconds=round(source.seconds["inversion"], 3),
                            source_pass_seconds=round(source.seconds["source_pass"], 3),
                            cache_gib=round(source.nbytes / 2**30, 3))
    paper = ds.InjectionConfig.paper(steps)
    with Stage(stages, "paper", device, steps):
        styler.transfer(source, style=lora_a, prompt=prompt, config=paper, progress=False)
    with Stage(stages, "rerender", device, steps):
        styler.transfer(source, style=lora_a, prompt=prompt, config=paper.replace(feature_steps=round(0.4 * steps)), progress=False)
    with Stage(stages, "official", device, steps):
        styler.transfer(source, style=lora_a, prompt=prompt, config=ds.InjectionConfig.official(steps), progress=False)
    h = w = size // 8
    left = torch.zeros(h, w); left[:, : w // 2] = 1
    with Stage(stages, "two_style", device, steps):
        styler.transfer(source, styles=[(lora_a, left, prompt), (lora_b, 1 - left, prompt)], config=paper, progress=False)

    t_inj, t_plain = step_ratio(styler, source, paper, lora_a, device, repeats)
    first = stages["invert"]["seconds"] + stages["paper"]["seconds"]
    result = dict(
        check="diffstyler gpu_check", mode="tiny" if tiny else "full", device=str(device),
        gpu=torch.cuda.get_device_name(device) if device.type == "cuda" else None, dtype=str(dtype).replace("torch.", ""),
        size_px=size, params_millions=params, inversion_steps=inv, sampling_steps=steps, lora_steps=lora_steps, lora_rank=16,
        stages=stages,
        ratios=dict(injected_step_over_plain_step=round(t_inj / t_plain, 3), injected_step_ms=round(1000 * t_inj, 2),
                    plain_step_ms=round(1000 * t_plain, 2),
                    rerender_over_first_run=round(stages["rerender"]["seconds"] / first, 4)),
        peak_gib_overall=round(torch.cuda.max_memory_allocated(device) / 2**30, 2) if device.type == "cuda" else None,
        total_seconds=round(time.perf_counter() - t_all, 1),
        versions=dict(python=platform.python_version(), torch=torch.__version__, diffstyler=ds.__version__,
                      cuda=torch.version.cuda))
    text = json.dumps(result)
    print(text)
    if a.out: Path(a.out).write_text(text + "\n")
    return result


if __name__ == "__main__":
    main()
