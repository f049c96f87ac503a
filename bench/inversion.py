#!/usr/bin/env python3
"""Inversion benchmark (issue 19, deliverable 5): reconstruction PSNR and inversion time of plain DDIM inversion with 1000
and 50 steps, and of 50 steps with k fixed-point iterations per step (`fixed_point_iters`, k = 1..5), in one run.

For each picture: DDIM-invert it (empty prompt), denoise the inverted noise again with the same UNet over the 50 sampling
steps (`invert`'s source pass, record=None), decode, and compare with the input at the model's working size (PSNR, dB).
"vs VAE" is the PSNR against the VAE's own round trip (encode + decode, no diffusion): the inversion's share of the error.
Times are inversion seconds only (the source pass is the same 50 steps everywhere); each variant's time is the median of
`--repeats` runs, the variants measured alternately with the 1000-step baseline in every round, and printed as a ratio
to the 1000-step median. Target (issue 19): within 1 dB of 1000 steps at <= 0.25 of its time.

Pictures: toy scenes (`diffstyler.toy.render_scene`) on the toy model, and the authors' demo photos
(/work/shared/data/authors-demo or --photos) through the toy model (its PCA patch VAE and its UNet, at 64 px).

Usage: python bench/inversion.py [--model toy] [--photos DIR] [--repeats 2] [--ks 1,2,3,4,5] [--device cuda --dtype float16]
On a GPU with SD 2.1: python bench/inversion.py --model sd21-base --device cuda --dtype float16 --scenes 0
(reads the photos at 512 px). Run it alone on the machine: timings of a loaded CPU are noisy."""
import argparse, statistics, sys, time
from pathlib import Path
import torch
import diffstyler as ds
from diffstyler.core import prepare_image
from diffstyler.inversion import invert
from diffstyler.models import load_pipeline, encode_image, decode_latents, image_size, size_multiple
from diffstyler.toy import render_scene, psnr

SCENES = [([("star", "yellow"), ("square", "red")], "gray", "checker", 4),
          ([("circle", "blue")], "white", "flat", 1),
          ([("triangle", "green"), ("circle", "red")], "black", "stripes", 2)]

def pictures(args):
    out = []
    for shapes, bg, style, seed in SCENES[:args.scenes]:
        try: img = render_scene(shapes, bg, style, seed=seed)[0]
        except Exception: img = render_scene(shapes, bg, "flat", seed=seed)[0]   # a style this toy world does not know
        out.append((f"toy scene {seed} ({style})", img))
    folder = Path(args.photos)
    for name in ("deer1.jpg", "girl1.jpg"):
        if (folder / name).exists(): out.append((f"photo {name}", str(folder / name)))
    if not out: sys.exit(f"no pictures: --scenes 0 and no photos in {folder}")
    return out

def reconstruct(pipe, img, n_inv, k, steps):
    "(PSNR vs input, PSNR vs the VAE round trip, inversion seconds) of one inversion + source pass."
    x = prepare_image(img, image_size(pipe), multiple=size_multiple(pipe))[0]
    src = invert(pipe, img, n_inv, steps, record=None, progress=False, fixed_point_iters=k)
    y = decode_latents(pipe, src.latents[-1:].to(pipe.unet.device)).cpu()
    vae = decode_latents(pipe, encode_image(pipe, x)).cpu()
    return psnr(x, y), psnr(vae, y), src.seconds["inversion"]

def sync(pipe):
    if pipe.unet.device.type == "cuda": torch.cuda.synchronize()

def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="toy"); ap.add_argument("--device", default=None); ap.add_argument("--dtype", default=None)
    ap.add_argument("--photos", default="/work/shared/data/authors-demo"); ap.add_argument("--scenes", type=int, default=3)
    ap.add_argument("--steps", type=int, default=50); ap.add_argument("--ks", default="1,2,3,4,5")
    ap.add_argument("--repeats", type=int, default=2, help="timing rounds on the first picture (others: one run each)")
    args = ap.parse_args()
    torch.manual_seed(0)
    pipe = load_pipeline(args.model, device=args.device, dtype=args.dtype)
    ks = [int(k) for k in args.ks.split(",") if k]
    variants = [("1000 plain", 1000, 0), (f"{args.steps} plain", args.steps, 0)] + [(f"{args.steps} fp k={k}", args.steps, k) for k in ks]
    print(f"model {args.model} on {pipe.unet.device} ({pipe.unet.dtype}), {image_size(pipe)} px, {args.steps} sampling steps; "
          f"torch threads {torch.get_num_threads()}")
    rows = {}
    for j, (label, img) in enumerate(pictures(args)):
        times = {v[0]: [] for v in variants}
        for r in range(args.repeats if j == 0 else 1):
            for name, n_inv, k in variants:   # alternate: every round runs every variant once
                sync(pipe); p, pv, sec = reconstruct(pipe, img, n_inv, k, args.steps); sync(pipe)
                times[name].append(sec); rows.setdefault(label, {})[name] = (p, pv)
        base = statistics.median(times["1000 plain"])
        print(f"\n== {label}")
        print(f"{'variant':14s} {'UNet calls/step':>15s} {'PSNR dB':>8s} {'vs 1000':>8s} {'vs VAE':>8s} {'time ratio':>10s}")
        for name, n_inv, k in variants:
            p, pv = rows[label][name]
            ratio = statistics.median(times[name]) / base
            print(f"{name:14s} {1 + k:15d} {p:8.2f} {p - rows[label]['1000 plain'][0]:+8.2f} {pv:8.2f} {ratio:10.3f}"
                  + ("" if j == 0 else "  (one run)"))
    print("\nmean over pictures (PSNR vs input, dB; difference to 1000 plain):")
    for name, _, _ in variants:
        d = statistics.mean(rows[l][name][0] - rows[l]["1000 plain"][0] for l in rows)
        print(f"  {name:14s} {statistics.mean(rows[l][name][0] for l in rows):7.2f}  {d:+6.2f}")

if __name__ == "__main__":
    main()
