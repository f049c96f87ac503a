#!/usr/bin/env python3
"""Injection benchmarks (issues 3 and 5), each figure a ratio of two timings measured in this one run.

1. a styled step with injection (paper preset, every injected kind active, CFG batch 2) over a plain step (same batch, no hooks)
   -> target <= 1.10
2. a re-render after a threshold change over the first full run (inversion + source pass + transfer)
   -> target <= 0.35
3. a two-style masked run (paper: 2 LoRA passes, batch 2, cached source) over the authors' structure
   (official preset: base + 2 LoRA UNet passes on batch 3 [source, uncond, cond]) on the same model
   -> target <= 0.6
on the tiny pipeline and on an SD-2.1-shaped random-weight UNet at reduced resolution.

Usage: python bench/injection.py [--only tiny|sd] [--sd-size 64] [--repeats 5]
Run it alone on the machine: timings of a loaded CPU are noisy (the ratios less so, since A and B alternate)."""
import argparse, statistics, time, sys
import numpy as np
import torch
from PIL import Image
import diffstyler as ds
from diffstyler.hooks import InjectionController, hooked
from diffstyler.inversion import sd21_cache_bytes

def timeit(fn, repeats):
    ts = []
    for _ in range(repeats):
        t = time.perf_counter(); fn(); ts.append(time.perf_counter() - t)
    return statistics.median(ts)

def alternate(fa, fb, repeats):
    "Median times of fa and fb, measured alternately (so load changes hit both)."
    fa(); fb()
    ta, tb = [], []
    for _ in range(repeats):
        t = time.perf_counter(); fa(); ta.append(time.perf_counter() - t)
        t = time.perf_counter(); fb(); tb.append(time.perf_counter() - t)
    return statistics.median(ta), statistics.median(tb)

def add_random_lora(unet, name, seed):
    from peft import LoraConfig
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        unet.add_adapter(LoraConfig(r=16, lora_alpha=16, target_modules=["to_q", "to_k", "to_v"], init_lora_weights="gaussian"),
                         adapter_name=name)
    return name

def content_image(size):
    rng = np.random.default_rng(0)
    return Image.fromarray(np.kron(rng.integers(0, 255, (8, 8, 3)), np.ones((size // 8, size // 8, 1))).astype(np.uint8))

@torch.no_grad()
def run(label, pipe, size, inv_steps, steps, repeats):
    print(f"\n== {label}: image {size}px, latents {size // 8}x{size // 8}, {inv_steps} inversion steps, {steps} sampling steps")
    styler = ds.DiffStyler(pipe)
    unet = pipe.unet
    a = add_random_lora(unet, "bench_a", 1); b = add_random_lora(unet, "bench_b", 2)
    img = content_image(size)
    paper = ds.InjectionConfig.paper(num_steps=steps)

    # first full run: inversion + source pass + transfer
    t0 = time.perf_counter()
    source = styler.invert(img, inv_steps, steps, progress=False)
    first_res = styler.transfer(source, style=a, prompt="painting of <sss>", config=paper, progress=False)
    t_first = time.perf_counter() - t0
    t_rerender = timeit(lambda: styler.transfer(source, style=a, prompt="painting of <sss>",
                                                config=paper.replace(feature_steps=max(0, paper.feature_steps - 1)), progress=False),
                        max(1, repeats // 2))
    print(f"first full run {t_first:.2f}s (inversion {source.seconds['inversion']:.2f}s, source pass {source.seconds['source_pass']:.2f}s); "
          f"re-render after a threshold change {t_rerender:.2f}s")
    print(f"  RATIO re-render / first run = {t_rerender / t_first:.3f}   (target <= 0.35)")

    # one styled step with injection vs a plain step, both CFG batch 2 with the LoRA active
    from diffstyler.lora import use_adapter
    z = source.inverted[:1].expand(2, -1, -1, -1).contiguous()
    emb = torch.cat([ds.models.encode_text(pipe, ""), ds.models.encode_text(pipe, "painting of <sss>")])
    t = source.timesteps[0]
    ctl = InjectionController(inject=paper, source=source.store); ctl.step = 0
    block = 5  # calls per timed block; the hooks are installed once per block, as once per transfer in the library
    def plain():
        for _ in range(block): unet(z, t, encoder_hidden_states=emb)
    def injected():
        with hooked(unet, ctl):
            for _ in range(block): unet(z, t, encoder_hidden_states=emb)
    with use_adapter(unet, a):
        t_plain, t_inj = alternate(plain, injected, repeats)
    t_plain, t_inj = t_plain / block, t_inj / block
    print(f"plain step {t_plain * 1000:.1f} ms; styled step with injection (features, SA, CA) {t_inj * 1000:.1f} ms")
    print(f"  RATIO injected step / plain step = {t_inj / t_plain:.3f}   (target <= 1.10)")

    # two styles with masks: ours vs the authors' structure
    left = torch.zeros(size, size); left[:, : size // 2] = 1; right = 1 - left
    styles = [(a, left, "painting of <sss>"), (b, right, "painting of <sss>")]
    ours = lambda: styler.transfer(source, styles=styles, config=paper, progress=False)
    theirs = lambda: styler.transfer(source, styles=styles, config=ds.InjectionConfig.official(num_steps=steps), progress=False)
    t_ours, t_theirs = alternate(ours, theirs, max(1, repeats // 2))
    print(f"two-style masked run: ours {t_ours:.2f}s, authors' structure ((K+1) UNets on batch 3) {t_theirs:.2f}s")
    print(f"  RATIO ours / authors' structure = {t_ours / t_theirs:.3f}   (target <= 0.6)")
    print(f"source cache of this run: {source.nbytes / 2**20:.2f} MiB")
    return dict(rerender=t_rerender / t_first, step=t_inj / t_plain, multi=t_ours / t_theirs)

def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--only", choices=["tiny", "sd"])
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--sd-size", type=int, default=64)
    ap.add_argument("--sd-steps", type=int, default=10)
    ap.add_argument("--sd-inversion-steps", type=int, default=100)
    args = ap.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    if args.only in (None, "tiny"):
        run("tiny pipeline", ds.load_pipeline("tiny"), 64, 1000, 50, args.repeats)
    if args.only in (None, "sd"):
        pipe = ds.load_pipeline("sd21-random", device="cpu", dtype="float32")
        pipe.unet.config.sample_size = args.sd_size // 8
        run("SD-2.1-shaped UNet (random weights)", pipe, args.sd_size, args.sd_inversion_steps, args.sd_steps, max(3, args.repeats // 2))
    for name, cfg in (("record='all'", None), ("paper preset", ds.InjectionConfig.paper())):
        print(f"SD 2.1 at 512px, 50 steps, source cache ({name}), fp16: {sd21_cache_bytes(50, cfg) / 2**30:.2f} GiB; "
              f"fp32: {sd21_cache_bytes(50, cfg, 4) / 2**30:.2f} GiB")

if __name__ == "__main__":
    main()
