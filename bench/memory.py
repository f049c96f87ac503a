#!/usr/bin/env python3
"""Device memory of DiffStyler for SD 2.1 at 512 px in fp16 (issue 19, deliverable 4), from shapes, checked against runs.

1. The model, from shapes: the SD 2.1-base UNet is built on the meta device (its real config, no weights, no memory), its
   parameters and its rank-16 LoRA's parameters counted; the source cache is `cache_bytes` of the keys each choice of
   `record` holds. Printed for ours (one UNet, K LoRA adapters, the cache: record='all', the paper preset's cache on the
   GPU, the same cache in CPU memory with one step prefetched, the official presets' nothing) and for the authors'
   structure (the base UNet plus a deep copy of the UNet per style, each with its LoRA on to_q/k/v/out), K = 1 and 2.
   Activations are not modelled: they depend on the batch (ours: 2 rows per style with guidance; theirs: 3 rows per UNet
   pass) and are freed between steps. Target (issue 19): the paper preset at <= 0.4 of the authors' structure.
2. Checks of the cache formula, exact to the byte:
   - SD 2.1 itself at 512 px: one source-pass step of the meta-device UNet through our hooks, record='all' (every tensor's
     real shape, no compute), against `cache_bytes`;
   - a measured small run: the tiny pipeline on the CPU, `invert` with record='all' / 'paper' / 'official' / a list:
     the FeatureStore's bytes against `cache_bytes(cache_keys(config))` computed from the configs alone.
3. With --device cuda: the measured GPU memory (torch.cuda.max_memory_allocated) of a paper-preset transfer on --model
   (default sd21-base if it loads, else SD 2.1's random-weight UNet 'sd21-random') with the cache on the GPU and offloaded
   with prefetch, against the model of part 1.

Usage: python bench/memory.py [--device cuda] [--model sd21-base] [--size 512]"""
import argparse, sys
import torch
from diffusers import UNet2DConditionModel
import diffstyler as ds
from diffstyler.core import InjectionConfig
from diffstyler.hooks import FeatureStore, InjectionController, hooked
from diffstyler.inversion import cache_keys, cache_bytes, prefetch_bytes, record_plan, invert
from diffstyler.lora import lora_parameter_count
from diffstyler.models import sd21_unet_config, tiny_pipeline

GiB = 2 ** 30

def sd21_meta_unet():
    with torch.device("meta"): return UNet2DConditionModel(**sd21_unet_config()).half()

def check_sd21_shapes(unet, size):
    "Record one step of every layer of the meta-device SD 2.1 UNet; its bytes against the formula."
    h = size // 8
    plan = record_plan("all", 1, unet); store = FeatureStore()
    ctl = InjectionController(record=plan, recorder=store); ctl.step = 0
    z = torch.zeros(1, 4, h, h, device="meta", dtype=torch.float16); c = torch.zeros(1, 77, 1024, device="meta", dtype=torch.float16)
    with torch.no_grad(), hooked(unet, ctl): unet(z, 10, encoder_hidden_states=c)
    formula = cache_bytes(plan.keys, unet.config, (h, h), 77, 2)
    ok = store.nbytes == formula and set(store.data) == set(plan.keys)
    print(f"SD 2.1 meta-device source step at {size} px, record='all': {len(store)} tensors, {store.nbytes:,} bytes recorded; "
          f"formula {formula:,}: {'exact' if ok else 'MISMATCH'}")
    return ok

def check_tiny():
    "Measured small run: the tiny pipeline's FeatureStore bytes against the formula from the configs."
    from PIL import Image
    import numpy as np
    pipe = tiny_pipeline(); steps = 10
    img = Image.fromarray(np.kron(np.random.default_rng(0).integers(0, 255, (8, 8, 3)), np.ones((8, 8, 1))).astype(np.uint8))
    ok = True
    for rec in ("all", "paper", "official", "official_2024", ["paper", InjectionConfig.paper(feature_layers=(2,)).replace(name="extra")]):
        for dtype in (None, torch.float16):
            src = invert(pipe, img, 20, steps, record=rec, cache_dtype=dtype, progress=False)
            keys = record_plan(rec, steps, pipe.unet).keys     # from the configs alone
            formula = cache_bytes(keys, pipe.unet.config, tuple(src.latents.shape[-2:]), pipe.tokenizer.model_max_length,
                                  2 if dtype == torch.float16 else 4)
            same = src.store.nbytes == formula and set(src.store.data) == set(keys)
            ok &= same
            print(f"tiny pipeline, record={rec if isinstance(rec, str) else 'paper+extra'!s:14s} {str(dtype or 'float32'):14s}: "
                  f"measured {src.store.nbytes:>9,} bytes, formula {formula:>9,}: {'exact' if same else 'MISMATCH'}")
    return ok

def model(size, K):
    "Device bytes of each structure for SD 2.1 at `size` px, fp16, K styles."
    unet = sd21_meta_unet()
    lora_ours, n_unet = lora_parameter_count(unet, 16, ("to_q", "to_k", "to_v"))
    lora_theirs, _ = lora_parameter_count(unet, 16, ("to_q", "to_k", "to_v", "to_out.0"))
    h, steps, b = size // 8, 50, 2
    latents = (steps + steps + 1) * 4 * h * h * 4          # SourceTrajectory.inverted + .latents, fp32
    cfg = unet.config
    paper = cache_keys(InjectionConfig.paper(), steps)
    every = record_plan("all", steps, unet).keys
    weights = n_unet * b + K * lora_ours * b
    rows = {
        "ours, record='all' on the GPU (the old default)": weights + cache_bytes(every, cfg, (h, h), 77, b) + latents,
        "ours, paper preset, its cache on the GPU": weights + cache_bytes(paper, cfg, (h, h), 77, b) + latents,
        "ours, paper preset, cache on the CPU, prefetch": weights + prefetch_bytes(paper, cfg, (h, h), 77, b) + latents,
        "ours, official presets (no cache)": weights + latents,
        f"authors: base UNet + {K} deep cop{'y' if K == 1 else 'ies'}": (1 + K) * n_unet * b + K * lora_theirs * b + latents,
    }
    return rows, dict(unet=n_unet * b, lora=lora_ours * b, paper_cache=cache_bytes(paper, cfg, (h, h), 77, b),
                      all_cache=cache_bytes(every, cfg, (h, h), 77, b), prefetch=prefetch_bytes(paper, cfg, (h, h), 77, b))

def measure_cuda(name, size):
    "Measured peak GPU memory of a paper-preset transfer, cache on the GPU vs offloaded with prefetch."
    from PIL import Image
    import numpy as np
    try: pipe = ds.load_pipeline(name, device="cuda", dtype="float16")
    except Exception as e:
        print(f"{name} does not load ({str(e)[:80]}): using sd21-random"); pipe = ds.load_pipeline("sd21-random", device="cuda", dtype="float16")
    styler = ds.DiffStyler(pipe)
    img = Image.fromarray(np.kron(np.random.default_rng(0).integers(0, 255, (8, 8, 3)), np.ones((size // 8, size // 8, 1))).astype(np.uint8))
    base = torch.cuda.memory_allocated()
    print(f"\nmeasured on {torch.cuda.get_device_name()}: pipeline {base / GiB:.2f} GiB allocated (UNet, VAE, text encoder)")
    out = {}
    for offload in (False, True):
        src = invert(pipe, img, 50, 50, record="paper", cache_dtype=torch.float16, offload=offload, progress=False)
        torch.cuda.synchronize(); torch.cuda.reset_peak_memory_stats()
        held = torch.cuda.memory_allocated() - base
        peak_cache = [0]
        def cb(i, z):
            if offload: peak_cache[0] = max(peak_cache[0], src.store.gpu_nbytes)
        res = styler.transfer(src, prompt="", config=InjectionConfig.paper(), progress=False, callback=cb)
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() - base
        print(f"  offload={offload!s:5s}: held between calls {held / GiB:.3f} GiB (cache on the GPU: {src.store.nbytes / GiB:.3f} GiB "
              f"{'in CPU memory' if offload else ''}); transfer peak above the pipeline {peak / GiB:.3f} GiB"
              + (f"; most cache bytes on the GPU during the transfer {peak_cache[0] / GiB:.3f} GiB" if offload else ""))
        out[offload] = res.latents.cpu()
        del src, res; torch.cuda.empty_cache()
    same = torch.equal(out[False], out[True])
    print(f"  offloaded transfer == transfer with the cache on the GPU: {same}")
    return same

def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", type=int, default=512); ap.add_argument("--device", default="cpu")
    ap.add_argument("--model", default="sd21-base"); ap.add_argument("--skip-tiny", action="store_true")
    args = ap.parse_args()
    ok = check_sd21_shapes(sd21_meta_unet(), args.size)
    if not args.skip_tiny: ok &= check_tiny()
    for K in (1, 2):
        rows, parts = model(args.size, K)
        authors = rows[[k for k in rows if k.startswith("authors")][0]]
        if K == 1:
            print(f"\nSD 2.1 at {args.size} px, fp16, 50 steps: UNet {parts['unet'] / GiB:.3f} GiB, one rank-16 Q/K/V LoRA "
                  f"{parts['lora'] / 2**20:.1f} MiB, caches: record='all' {parts['all_cache'] / GiB:.3f} GiB, paper preset "
                  f"{parts['paper_cache'] / GiB:.3f} GiB, of it on the GPU with prefetch {parts['prefetch'] / GiB:.3f} GiB")
        print(f"\nK = {K} style{'s' if K > 1 else ''}: device memory (weights + cache + trajectory latents), ratio to the authors' structure")
        for name, b in rows.items(): print(f"  {name:52s} {b / GiB:6.2f} GiB  {b / authors:5.2f}")
    if args.device == "cuda":
        if not torch.cuda.is_available(): sys.exit("--device cuda: no CUDA device here")
        ok &= measure_cuda(args.model, args.size)
    if not ok: sys.exit("the cache formula does not match the measured bytes")

if __name__ == "__main__":
    main()
