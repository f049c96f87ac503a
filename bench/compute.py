#!/usr/bin/env python3
"""Compute benchmarks of issue 19, each figure a ratio of timings measured alternately in this one run.

1. an injected step (paper preset, step 0: features of decoder layers 4-11 and self/cross Q, K from the cache, CFG batch 2,
   LoRA active) over a plain step, now that the residual branches the cache overwrites are not computed; and the same
   with the branches computed and then replaced (the path before issue 19)                 -> target <= 0.82
2. two masked styles (paper preset, styles batched into one UNet call per step) over the authors' structure (official
   preset, base + one UNet call per style on batch 3), and the scaling with K = 1..4 styles  -> target <= 0.50 at K = 2
3. switching adapters inside a transfer (`AdapterBank.select`) over entering a `use_adapter` block (a walk of the UNet and
   a merge, what each pass cost before)                                                     -> target <= 0.1 ms
on the SD-2.1-shaped random-weight UNet (bench/injection.py's model) at 8x8 (call-bound on a CPU) and 16x16 latents.

Usage: OMP_NUM_THREADS=1 python bench/compute.py [--latents 8 16] [--steps 10] [--repeats 3] [--ks 1 2 3 4]
       python bench/compute.py --device cuda --dtype fp16 --latents 64 --json out.json     (SD 2.1 size on a GPU)
Run it alone on the machine: timings of a loaded CPU are noisy (the ratios less so, since the runs alternate).
Measured figures: bench/results/compute_cpu.log."""
import argparse, json, os, statistics, sys, time
import numpy as np
import torch
from PIL import Image
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from injection import add_random_lora   # the benchmarks' LoRA (rank 16 on Q, K, V)
import diffstyler as ds
from diffstyler.hooks import InjectionController, InjectedResnet, hooked
from diffstyler.lora import use_adapter


def alternate_all(fns, repeats, sync=lambda: None):
    "Median time of each function in `fns`, measured in turn `repeats` times after one warm-up round (load changes hit all)."
    def one(f):
        sync(); t = time.perf_counter(); f(); sync(); return time.perf_counter() - t
    for f in fns: one(f)
    ts = [[] for _ in fns]
    for _ in range(repeats):
        for k, f in enumerate(fns): ts[k].append(one(f))
    return [statistics.median(t) for t in ts]


def old_feature_path(self, input_tensor, temb=None, *args, **kwargs):
    "Before issue 19: the whole ResNet runs and its conv2 output is replaced afterwards (a forward hook)."
    c = self.controller
    if not c.wants("feature", self.layer): return self.original(input_tensor, temb, *args, **kwargs)
    def hook(module, a, h):
        rows = c.branch_rows(self.layer, h.shape[0])
        return c.feature(self.layer, h if rows is None else h[rows], h.shape[0], h)
    handle = self.resnet.conv2.register_forward_hook(hook)
    try: return self.original(input_tensor, temb, *args, **kwargs)
    finally: handle.remove()


def content_image(size):
    rng = np.random.default_rng(0)
    return Image.fromarray(np.kron(rng.integers(0, 255, (8, 8, 3)), np.ones((size // 8, size // 8, 1))).astype(np.uint8))


def halves(size, k):
    "k vertical strips of the image: one mask per style."
    ms = []
    for j in range(k):
        m = torch.zeros(size, size); m[:, j * size // k:(j + 1) * size // k] = 1; ms.append(m)
    return ms


@torch.no_grad()
def step_figure(pipe, names, repeats, sync, block):
    "Figure 1: one feature-injected step over a plain step (and over the computed-then-replaced path)."
    unet = pipe.unet
    dev, dt = unet.device, unet.dtype
    h = unet.config.sample_size
    g = torch.Generator().manual_seed(0)
    z1 = torch.randn(1, 4, h, h, generator=g).to(dev, dt)
    e0 = ds.models.encode_text(pipe, "").to(dt)
    paper = ds.InjectionConfig.paper()
    rec = InjectionController(record=paper); rec.step = 0
    with use_adapter(unet, None), hooked(unet, rec): unet(z1, 981, encoder_hidden_states=e0)   # the source pass at step 0
    z = torch.randn(2, 4, h, h, generator=g).to(dev, dt)
    emb = torch.cat([e0, ds.models.encode_text(pipe, "painting of <sss>").to(dt)])
    ctl = InjectionController(inject=paper, source=rec.recorder); ctl.step = 0
    out = {}
    def plain():
        for _ in range(block): out["plain"] = unet(z, 981, encoder_hidden_states=emb).sample
    def injected():
        with hooked(unet, ctl):
            for _ in range(block): out["injected"] = unet(z, 981, encoder_hidden_states=emb).sample
    def before():
        saved = InjectedResnet.__call__
        InjectedResnet.__call__ = old_feature_path
        try:
            with hooked(unet, ctl):
                for _ in range(block): out["before"] = unet(z, 981, encoder_hidden_states=emb).sample
        finally: InjectedResnet.__call__ = saved
    with use_adapter(unet, names[0]):
        t_plain, t_inj, t_before = (t / block for t in alternate_all([plain, injected, before], repeats, sync))
    diff = (out["injected"].float() - out["before"].float()).abs().max().item()
    print(f"plain step {t_plain * 1e3:.1f} ms; injected step {t_inj * 1e3:.1f} ms; injected, branches computed then replaced "
          f"(before issue 19) {t_before * 1e3:.1f} ms; max |skipped - replaced| = {diff:.1e}")
    print(f"  RATIO injected step / plain step = {t_inj / t_plain:.3f}   (target <= 0.82; before issue 19: {t_before / t_plain:.3f})")
    return dict(plain_ms=t_plain * 1e3, injected_ms=t_inj * 1e3, before_ms=t_before * 1e3, injected_over_plain=t_inj / t_plain,
                before_over_plain=t_before / t_plain, max_abs_diff=diff)


@torch.no_grad()
def styles_figure(styler, names, size, steps, inv_steps, ks, repeats, sync):
    "Figure 2: K masked styles batched (paper preset) vs one call per style, and vs the authors' structure."
    source = styler.invert(content_image(size), inv_steps, steps, progress=False)
    paper, official = ds.InjectionConfig.paper(num_steps=steps), ds.InjectionConfig.official(num_steps=steps)
    rows = {}
    for k in ks:
        styles = [(names[j], m, "painting of <sss>") for j, m in enumerate(halves(size, k))] if k > 1 else [(names[0], None, "painting of <sss>")]
        run = lambda cfg, batched: (lambda: styler.transfer(source, styles=styles, config=cfg, progress=False, batch_styles=batched))
        t_ours, t_loop, t_theirs = alternate_all([run(paper, True), run(paper, False), run(official, False)], repeats, sync)
        rows[k] = dict(ours_s=t_ours, loop_s=t_loop, theirs_s=t_theirs, ours_over_theirs=t_ours / t_theirs, ours_over_loop=t_ours / t_loop,
                       ours_ms_per_style_step=t_ours / steps / k * 1e3, theirs_ms_per_style_step=t_theirs / steps / k * 1e3)
        print(f"K={k}: ours (one call per step) {t_ours:.2f}s, ours one call per style {t_loop:.2f}s, authors' structure "
              f"({k + (k > 1)} calls of batch 3 per step) {t_theirs:.2f}s; per style per step: ours {rows[k]['ours_ms_per_style_step']:.1f} ms, "
              f"theirs {rows[k]['theirs_ms_per_style_step']:.1f} ms")
        print(f"  RATIO K={k} ours / authors' structure = {t_ours / t_theirs:.3f}" + ("   (target <= 0.50)" if k == 2 else "")
              + f";  batched / one call per style = {t_ours / t_loop:.3f}")
    return rows


@torch.no_grad()
def switch_figure(unet, names, n=20000):
    "Figure 3: an adapter switch inside a transfer (bank.select) vs entering a use_adapter block (module walk + merge)."
    with use_adapter(unet, names[0]) as bank:
        wa, wb = bank.weights(names[0]), bank.weights(names[1])
        t = time.perf_counter()
        for _ in range(n // 2): bank.select(wa); bank.select(wb)
        t_select = (time.perf_counter() - t) / n
    m = 20
    t = time.perf_counter()
    for j in range(m):
        with use_adapter(unet, names[j % 2]): pass
    t_block = (time.perf_counter() - t) / m
    print(f"adapter switch inside a transfer (AdapterBank.select) {t_select * 1e6:.2f} us; entering a use_adapter block "
          f"(walk of the UNet's {sum(1 for _ in unet.modules())} modules + merge) {t_block * 1e3:.2f} ms")
    print(f"  SWITCH select = {t_select * 1e3:.5f} ms (target <= 0.1 ms); select / use_adapter block = {t_select / t_block:.2e}")
    return dict(select_ms=t_select * 1e3, use_adapter_block_ms=t_block * 1e3)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", choices=["fp32", "fp16"], default="fp32")
    ap.add_argument("--latents", type=int, nargs="+", default=[8, 16], help="latent sizes (image size = 8x)")
    ap.add_argument("--steps", type=int, default=10, help="sampling steps of the transfers (paper thresholds scaled)")
    ap.add_argument("--inversion-steps", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--step-repeats", type=int, default=5)
    ap.add_argument("--ks", type=int, nargs="+", default=[1, 2, 3, 4])
    ap.add_argument("--skip", nargs="*", default=[], choices=["step", "styles", "switch"])
    ap.add_argument("--json", help="write the figures here")
    args = ap.parse_args()
    if any(h % 8 for h in args.latents): ap.error(f"--latents {args.latents}: SD's UNet downsamples 8x, use multiples of 8 (8, 16, ..., 64).")
    dtype = {"fp32": torch.float32, "fp16": torch.float16}[args.dtype]
    sync = torch.cuda.synchronize if args.device.startswith("cuda") else (lambda: None)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {args.device}, {args.dtype}; load: {os.getloadavg()}")
    pipe = ds.load_pipeline("sd21-random", device=args.device, dtype=dtype)
    names = [add_random_lora(pipe.unet, f"bench_{k}", k + 1) for k in range(max(max(args.ks), 2))]
    styler = ds.DiffStyler(pipe)
    result = dict(device=args.device, dtype=args.dtype, threads=torch.get_num_threads(), load_before=os.getloadavg(), sizes={})
    def save():   # after every figure: a run stopped early keeps what it measured
        if args.json:
            with open(args.json, "w") as f: json.dump(dict(result, load_now=os.getloadavg()), f, indent=1)
    if "switch" not in args.skip: result["switch"] = switch_figure(pipe.unet, names); save()
    for h in args.latents:
        pipe.unet.config.sample_size = h
        print(f"\n== SD-2.1-shaped UNet (random weights), latents {h}x{h} (image {8 * h}px), {args.steps} sampling steps")
        r = result["sizes"][h] = {}
        if "step" not in args.skip: r["step"] = step_figure(pipe, names, args.step_repeats, sync, block=2); save()
        if "styles" not in args.skip:
            r["styles"] = styles_figure(styler, names, 8 * h, args.steps, args.inversion_steps, args.ks, args.repeats, sync); save()
    result["load_after"] = os.getloadavg()
    save()
    print("\nJSON " + json.dumps(result))


if __name__ == "__main__":
    main()
