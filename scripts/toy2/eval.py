#!/usr/bin/env python
"""Measure a second-toy-world checkpoint against issue 12's bars (prototype).

  python scripts/toy2/eval.py --model /root/toy2-runs/r1/ema --classifier CLS --contents 12 --out eval.json

Bars (issue 12): on `--contents` held-out content scenes (flat renders of layouts no training batch drew), inverted
(DDIM, empty prompt), then sampled with a base-style prompt (the content's caption with another base style word):
  problem   no injection (feature_steps = attention_steps = 0):       content IoU <= 0.5
  solution  InjectionConfig.paper():                                   IoU >= 0.8, classifier names the style >= 70%
  lora      one-image LoRA of a held-out style (TOY_LORA), paper preset: share >= 60% (<= 10% without), IoU >= 0.75
  fig7      feature steps 0 -> all (LoRA, paper attention): IoU rises, share falls, monotone within noise
  earlier   colour >= 80%, background >= 90%, shape >= 60% (single-object prompts from noise), 50-step inversion >= 35 dB
A same-caption control (the content's own caption, no injection) separates the style word's effect from guidance's.
"""
from __future__ import annotations
import argparse, json, sys, time
from pathlib import Path
sys.path.insert(0, str(Path(__file__).parent))
import numpy as np
import torch
from PIL import Image
from diffstyler.toy import (classify_colour, classify_background, classify_shape, object_mask, content_iou, psnr,
                            ddim_roundtrip, TOY_LORA, SHAPES, COLORS, BACKGROUNDS)
from diffstyler.core import InjectionConfig
from world import (BASE_STYLES, HELD_OUT_STYLES, STYLES, PATTERNS, sample_layout, render, caption, to_tensor, classify,
                   load_classifier, texture_scores)
from model import load_pipeline

BARS = dict(problem_iou=("<=", 0.5), solution_iou=(">=", 0.8), solution_share=(">=", 0.7), lora_share=(">=", 0.6),
            lora_share_without=("<=", 0.1), lora_iou=(">=", 0.75), fig7_monotone=("==", True), colour=(">=", 0.8),
            background=(">=", 0.9), shape=(">=", 0.6), inversion_psnr=(">=", 35.0))
CONTENT_SEED = 777_777  # layouts from this seed are never drawn by training (its pool uses seed + 1 of the run's seed)


def tex(im, style): return texture_scores(im)[style] if style in PATTERNS else float("nan")


def _ok(v, op, bar): return v <= bar if op == "<=" else v >= bar if op == ">=" else v == bar


def monotone(xs, tol, rising=True):
    "Each step moves the right way or stays within `tol`, and the end is beyond the start."
    xs = list(xs) if rising else [-x for x in xs]
    return all(b >= a - tol for a, b in zip(xs, xs[1:])) and xs[-1] > xs[0]


def caption_bars(pipe, net, n=48, guidance=7.5, steps=25, seed=1234):
    "Single-object prompts in base styles, from noise: colour / background / shape rules and the classifier's style share."
    rng = np.random.default_rng(seed)
    specs = [(SHAPES[rng.integers(4)], list(COLORS)[rng.integers(4)], list(BACKGROUNDS)[rng.integers(3)],
              BASE_STYLES[k % len(BASE_STYLES)]) for k in range(n)]
    prompts = [caption(dict(shapes=[(s, c)], background=b), st) for s, c, b, st in specs]  # the training captions' word order
    images = []
    for i in range(0, n, 16):
        g = torch.Generator().manual_seed(seed + i)
        images += pipe(prompts[i:i + 16], num_inference_steps=steps, guidance_scale=guidance, generator=g,
                       height=64, width=64).images
    styles = classify(net, images)
    res = dict(colour=np.mean([classify_colour(im) == c for im, (s, c, b, st) in zip(images, specs)]),
               background=np.mean([classify_background(im) == b for im, (s, c, b, st) in zip(images, specs)]),
               shape=np.mean([classify_shape(object_mask(im)) == s for im, (s, c, b, st) in zip(images, specs)]))
    for st in BASE_STYLES:
        res[f"sample_share_{st}"] = np.mean([p == st for p, sp in zip(styles, specs) if sp[3] == st])
    return {k: float(v) for k, v in res.items()}, images


def inversion_bar(pipe, n=16, seed=4321, fixed_point_iters=0):
    "Mean PSNR (dB) of 50-step DDIM inversion + 50-step sampling against the VAE reconstruction, on n base-style renders."
    rng = np.random.default_rng(seed)
    imgs = [render(sample_layout(rng), BASE_STYLES[k % len(BASE_STYLES)])[0] for k in range(n)]
    if not fixed_point_iters:
        rec, rt = ddim_roundtrip(pipe, to_tensor(imgs), steps=50)
        return float(np.mean([psnr(a, b) for a, b in zip(rec, rt)]))
    from diffstyler.transfer import DiffStyler  # the same round trip through the package's inversion with fixed-point steps
    st, out = DiffStyler(pipe), []
    for im in imgs:
        src = st.invert(Image.fromarray(im), 50, 50, record=None, progress=False, fixed_point_iters=fixed_point_iters)
        rec = np.asarray(pipe.vae(to_tensor([im])).sample.clamp(-1, 1).add(1).mul(127.5).round().byte().permute(0, 2, 3, 1)[0])
        out.append(psnr(rec, np.asarray(st.reconstruct(src).image)))
    return float(np.mean(out))


def transfer_bars(pipe, net, n_contents=12, styles=None, guidance=7.5, num_steps=25, inversion_steps=50,
                  lora_style="stripes", fractions=(0, 0.2, 0.4, 0.6, 0.8, 1.0), lora_kw=None, seed=0, log=print, with_lora=True,
                  content_start=0, fixed_point_iters=0):
    from diffstyler.transfer import DiffStyler
    from diffstyler.lora import delete_lora
    styler = DiffStyler(pipe)
    styles = styles or [s for s in BASE_STYLES if s != "flat"]
    paper = InjectionConfig.paper(num_steps, guidance_scale=guidance)
    none = paper.replace(feature_steps=0, attention_steps=0)
    fsteps = sorted({int(round(f * num_steps)) for f in fractions})
    # the LoRA: one picture of a held-out style (a layout of its own)
    lay = sample_layout(np.random.default_rng(seed + 555))
    style_img = Image.fromarray(render(lay, lora_style)[0])
    t0 = time.time()
    lkw = {**TOY_LORA, **(lora_kw or {})}
    lora = styler.train_lora(style_img, caption(lay, lora_style), seed=seed, progress=False, name=f"toy2_{lora_style}",
                             **lkw) if with_lora else None
    t_lora = time.time() - t0
    rng = np.random.default_rng(CONTENT_SEED + seed)
    rows, grid = [], []
    for _ in range(content_start): sample_layout(rng)  # a later slice of the same content sequence (parts run in parallel)
    for k in range(content_start, content_start + n_contents):
        lay = sample_layout(rng)
        img, masks = render(lay, "flat")
        content = Image.fromarray(img)
        src = styler.invert(content, inversion_steps, num_steps, record="all", progress=False, fixed_point_iters=fixed_point_iters)  # the Fig. 7 sweep injects up to every step
        tr = lambda prompt, cfg, st=None: styler.transfer(src, style=st, prompt=prompt, config=cfg, progress=False).image
        rec = styler.reconstruct(src).image
        control = tr(caption(lay, "flat"), none)
        row = dict(layout=lay, rec_iou=content_iou(rec, masks), control_iou=content_iou(control, masks),
                   control_change=float(np.abs(np.asarray(control, float) - np.asarray(rec, float)).mean()))
        pics = [content, rec, control]
        for st in styles:
            a, b = tr(caption(lay, st), none), tr(caption(lay, st), paper)
            row[st] = dict(problem_iou=content_iou(a, masks), problem_style=classify(net, [a])[0],
                           problem_change=float(np.abs(np.asarray(a, float) - np.asarray(rec, float)).mean()),
                           solution_iou=content_iou(b, masks), solution_style=classify(net, [b])[0],
                           problem_tex=tex(a, st), solution_tex=tex(b, st), control_tex=tex(control, st))
            pics += [a, b]
        st = styles[k % len(styles)]  # the paper's kind of prompt: the style alone, no content words ("checker style")
        a, b = tr(f"{st} style", none), tr(f"{st} style", paper)
        row["short"] = dict(style=st, problem_iou=content_iou(a, masks), problem_style=classify(net, [a])[0],
                            solution_iou=content_iou(b, masks), solution_style=classify(net, [b])[0])
        pics += [a, b]
        if lora is None:
            rows.append(row); grid.append(pics)
            log(f"content {k}: control IoU {row['control_iou']:.2f} | " + " | ".join(
                f"{st}: none {row[st]['problem_iou']:.2f}/{row[st]['problem_style']} paper {row[st]['solution_iou']:.2f}/{row[st]['solution_style']}"
                for st in styles))
            continue
        lp = caption(lay, lora_style)
        w, wo, wn = tr(lp, paper, lora), tr(lp, paper), tr(lp, none, lora)
        sweep = [tr(lp, paper.replace(feature_steps=f), lora) for f in fsteps]
        row["lora"] = dict(iou=content_iou(w, masks), style=classify(net, [w])[0], iou_without=content_iou(wo, masks),
                           style_without=classify(net, [wo])[0], iou_no_injection=content_iou(wn, masks),
                           style_no_injection=classify(net, [wn])[0], tex=tex(w, lora_style), tex_without=tex(wo, lora_style),
                           sweep_tex=[tex(im, lora_style) for im in sweep], sweep_iou=[content_iou(im, masks) for im in sweep],
                           sweep_style=classify(net, sweep))
        pics += [wo, wn, w] + sweep
        rows.append(row); grid.append(pics)
        log(f"content {k}: control IoU {row['control_iou']:.2f} | " + " | ".join(
            f"{st}: none {row[st]['problem_iou']:.2f}/{row[st]['problem_style']} paper {row[st]['solution_iou']:.2f}/{row[st]['solution_style']}"
            for st in styles) + f" | lora {row['lora']['iou']:.2f}/{row['lora']['style']} without {row['lora']['style_without']}"
            f" sweep {[round(v, 2) for v in row['lora']['sweep_iou']]} {row['lora']['sweep_style']}")
    if lora is not None: delete_lora(pipe.unet, lora.name)
    meta = dict(styles=styles, guidance=guidance, num_steps=num_steps, inversion_steps=inversion_steps, fixed_point_iters=fixed_point_iters, lora_style=lora_style,
                lora=lkw if lora is not None else None, lora_seconds=round(t_lora, 1), feature_steps=fsteps)
    return summarise(rows, meta), grid, style_img


def summarise(rows, meta):
    "Means over content scenes (rows may come from several parts run in parallel); `rows` are kept in the result."
    styles, lora_style = meta["styles"], meta["lora_style"]
    m = lambda f: float(np.mean([f(r) for r in rows]))
    res = dict(
        **meta, n_contents=len(rows), rows=rows,
        reconstruction_iou=m(lambda r: r["rec_iou"]), control_iou=m(lambda r: r["control_iou"]),
        control_change=m(lambda r: r["control_change"]),
        problem_iou=m(lambda r: np.mean([r[s]["problem_iou"] for s in styles])),
        problem_change=m(lambda r: np.mean([r[s]["problem_change"] for s in styles])),
        problem_share=m(lambda r: np.mean([r[s]["problem_style"] == s for s in styles])),
        solution_iou=m(lambda r: np.mean([r[s]["solution_iou"] for s in styles])),
        solution_share=m(lambda r: np.mean([r[s]["solution_style"] == s for s in styles])),
        per_style={s: dict(problem_iou=m(lambda r: r[s]["problem_iou"]), solution_iou=m(lambda r: r[s]["solution_iou"]),
                           problem_share=m(lambda r: r[s]["problem_style"] == s),
                           solution_share=m(lambda r: r[s]["solution_style"] == s),
                           control_tex=m(lambda r: r[s]["control_tex"]), problem_tex=m(lambda r: r[s]["problem_tex"]),
                           solution_tex=m(lambda r: r[s]["solution_tex"])) for s in styles})
    res.update(short_problem_iou=m(lambda r: r["short"]["problem_iou"]), short_solution_iou=m(lambda r: r["short"]["solution_iou"]),
               short_problem_share=m(lambda r: r["short"]["problem_style"] == r["short"]["style"]),
               short_solution_share=m(lambda r: r["short"]["solution_style"] == r["short"]["style"]))
    if "lora" not in rows[0]: return res
    res.update(
        lora_share=m(lambda r: r["lora"]["style"] == lora_style), lora_share_without=m(lambda r: r["lora"]["style_without"] == lora_style),
        lora_iou=m(lambda r: r["lora"]["iou"]), lora_iou_without=m(lambda r: r["lora"]["iou_without"]),
        lora_no_injection_iou=m(lambda r: r["lora"]["iou_no_injection"]),
        lora_tex=m(lambda r: r["lora"]["tex"]), lora_tex_without=m(lambda r: r["lora"]["tex_without"]),
        sweep_tex=[float(v) for v in np.mean([r["lora"]["sweep_tex"] for r in rows], 0)],
        lora_no_injection_share=m(lambda r: r["lora"]["style_no_injection"] == lora_style),
        sweep_iou=[float(v) for v in np.mean([r["lora"]["sweep_iou"] for r in rows], 0)],
        sweep_share=[float(v) for v in np.mean([[s == lora_style for s in r["lora"]["sweep_style"]] for r in rows], 0)])
    # within noise: one content flips IoU by ~1/n of its range, the share by 1/n
    res["fig7_monotone"] = bool(monotone(res["sweep_iou"], 0.03, True) and monotone(res["sweep_share"], 1.5 / len(rows), False))
    return res


def save_grid(grid, path, scale=2):
    rows = [np.concatenate([np.asarray(im.convert("RGB")) for im in r], 1) for r in grid]
    w = max(r.shape[1] for r in rows)
    rows = [np.pad(r, ((0, 0), (0, w - r.shape[1]), (0, 0))) for r in rows]
    im = Image.fromarray(np.concatenate(rows, 0))
    im.resize((im.width * scale, im.height * scale), Image.NEAREST).save(path)


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--model"); ap.add_argument("--classifier")
    ap.add_argument("--contents", type=int, default=12); ap.add_argument("--n", type=int, default=48)
    ap.add_argument("--guidance", type=float, default=7.5); ap.add_argument("--out", default=None)
    ap.add_argument("--grid", default=None); ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--skip", default="", help="comma list of parts to skip: caption,inversion,transfer,lora")
    ap.add_argument("--content-start", type=int, default=0, help="first content scene of this part")
    ap.add_argument("--inversion-steps", type=int, default=50, help="DDIM inversion steps of the transfer bars (with fixed-point iterations: use --steps', i.e. 25, so the inverted grid is the sampled one)")
    ap.add_argument("--fixed-point-iters", type=int, default=0, help="fixed-point iterations per inversion step (0: plain DDIM)")
    ap.add_argument("--lora", default=None, help='JSON overriding the TOY_LORA recipe, e.g. \'{"rank": 4, "alpha": 4, "lr": 3e-4}\'')
    ap.add_argument("--merge", nargs="*", default=None, help="only merge these result JSONs (parts run in parallel) and print")
    a = ap.parse_args(argv)
    if a.merge is not None:
        res = {}
        parts = [json.loads(Path(f).read_text()) for f in a.merge]
        for p in parts: res.update({k: v for k, v in p.items() if k not in ("rows", "bars")})
        rows = [r for p in parts for r in p.get("rows", [])]
        if rows:
            meta = next(p for p in parts if "rows" in p)
            res.update(summarise(rows, {k: meta[k] for k in ("styles", "guidance", "num_steps", "inversion_steps", "lora_style",
                                                             "lora", "lora_seconds", "feature_steps")}))
        res["seconds"] = [p.get("seconds") for p in parts]
        return report(res, a.out)
    torch.set_num_threads(a.threads)
    t0 = time.time()
    pipe, net = load_pipeline(a.model), load_classifier(a.classifier)
    skip = set(filter(None, a.skip.split(",")))
    res = dict(model=str(a.model), guidance=a.guidance)
    if "caption" not in skip:
        r, images = caption_bars(pipe, net, n=a.n, guidance=a.guidance); res.update(r)
        print("caption bars:", {k: round(v, 3) for k, v in r.items()}, f"({time.time() - t0:.0f} s)", flush=True)
    if "inversion" not in skip:
        res["inversion_psnr"] = inversion_bar(pipe, fixed_point_iters=a.fixed_point_iters); print(f"inversion {res['inversion_psnr']:.2f} dB ({time.time() - t0:.0f} s)", flush=True)
    if "transfer" not in skip:
        r, grid, style_img = transfer_bars(pipe, net, a.contents, guidance=a.guidance, log=lambda s: print(s, flush=True),
                                           with_lora="lora" not in skip, content_start=a.content_start, fixed_point_iters=a.fixed_point_iters,
                                           inversion_steps=a.inversion_steps, lora_kw=json.loads(a.lora) if a.lora else None)
        res.update(r)
        if a.grid: save_grid(grid, a.grid)
    res["seconds"] = round(time.time() - t0, 1)
    return report(res, a.out)


def report(res, out=None):
    print("\n| bar | measured | target | pass |\n|---|---|---|---|")
    for k, (op, bar) in BARS.items():
        if k in res: print(f"| {k} | {res[k]:.3f} | {op} {bar} | {'PASS' if _ok(res[k], op, bar) else 'FAIL'} |")
    for k in ("short_problem_iou", "short_solution_iou", "short_problem_share", "short_solution_share",
              "reconstruction_iou", "control_iou", "control_change", "problem_change", "problem_share", "lora_iou_without",
              "lora_no_injection_iou", "lora_no_injection_share", "lora_tex", "lora_tex_without", "sweep_tex",
              "sweep_iou", "sweep_share", "per_style", "lora_seconds"):
        if k in res: print(f"  {k}: {res[k]}")
    res["bars"] = {k: dict(op=op, target=bar, passed=bool(_ok(res[k], op, bar))) for k, (op, bar) in BARS.items() if k in res}
    if out: Path(out).write_text(json.dumps(res, indent=1, default=float))
    return res


if __name__ == "__main__":
    main()
