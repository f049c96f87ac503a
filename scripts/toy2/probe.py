#!/usr/bin/env python
"""Probes of a second-toy-world checkpoint: do its style words separate, which decoder layers does it use, when does a
picture's layout settle, and which part of the paper's injection keeps the content (the measurements behind runs r4-r6).

  python scripts/toy2/probe.py words    MODEL [--grid G.png]  # same noise, each base style word: classifier, textures
  python scripts/toy2/probe.py layers   MODEL   # zero each decoder group's ResNet outputs: how much does the picture move?
  python scripts/toy2/probe.py settle   MODEL [--lora]  # IoU of each step's predicted z0 with the content and the final picture
  python scripts/toy2/probe.py parts    MODEL [--lora]  # content IoU / classifier verdict per injection variant

`--lora` trains the one-image LoRA of the held-out stripes style (eval.py's picture; `--rank/--lr/--steps`) and styles with
it; without it the prompt is the content's caption in the checker / grid style. Contents are the first `--contents`
held-out scenes of eval.py. Everything runs on one CPU thread in seconds to a few minutes.
"""
from __future__ import annotations
import argparse, contextlib, sys
from pathlib import Path
sys.path.insert(0, str(Path(__file__).parent))
import numpy as np
import torch
from PIL import Image
from diffstyler.core import InjectionConfig
from diffstyler.toy import content_iou, object_mask
from world import BASE_STYLES, sample_layout, render, caption, load_classifier, classify, texture_scores
from model import load_pipeline
import eval as E

CLASSIFIER = Path(__file__).parent / "runs" / "r2" / "classifier.safetensors"


def words(pipe, a):
    """The same noise sampled with each base style word (`--contents` layouts x 4 styles): the classifier's verdicts and
    the texture scores per prompted style (and a grid with `--grid`)."""
    from world import PATTERNS, texture_scores
    net = load_classifier(a.classifier)
    rng = np.random.default_rng(2024)
    grid, res = [], {s: [] for s in BASE_STYLES}
    for i in range(a.contents):
        lay = sample_layout(rng)
        ims = pipe([caption(lay, s) for s in BASE_STYLES], num_inference_steps=a.num_steps, guidance_scale=a.guidance,
                   generator=[torch.Generator().manual_seed(i) for _ in BASE_STYLES], height=64, width=64).images
        for s, im, p in zip(BASE_STYLES, ims, classify(net, ims)): res[s].append((p, texture_scores(im)))
        grid.append(ims)
    for s in BASE_STYLES:
        print(f"{s:8s} classifier {[p for p, _ in res[s]]}  texture " +
              " ".join(f"{k}={np.mean([t[k] for _, t in res[s]]):.2f}" for k in PATTERNS))
    if a.grid: E.save_grid(grid, a.grid, 3)


def layers(pipe, a):
    """Zero the outputs of a group of decoder ResNets while sampling 4 prompts from noise: how far the pictures move
    (mean |diff| /255). A group whose zeroing moves nothing is unused by the model: injecting it cannot act."""
    resnets = [r for b in pipe.unet.up_blocks for r in b.resnets]  # decoder layers 0..11
    prompts = [caption(sample_layout(np.random.default_rng(s)), BASE_STYLES[s % 4]) for s in range(4)]

    def sample(group=()):
        hs = [resnets[k].register_forward_hook(lambda m, i, o: o * 0) for k in group]
        try:
            g = torch.Generator().manual_seed(0)
            return np.stack([np.asarray(im, float) for im in pipe(prompts, num_inference_steps=25, guidance_scale=a.guidance,
                                                                  generator=g, height=64, width=64).images])
        finally:
            for h in hs: h.remove()
    base = sample()
    for name, group in [("0-2", (0, 1, 2)), ("3-5", (3, 4, 5)), ("4", (4,)), ("6-8", (6, 7, 8)), ("9-11", (9, 10, 11))]:
        print(f"decoder layers {name:>4} zeroed: pictures move {np.abs(sample(group) - base).mean():6.2f}/255")


def _setup(pipe, a):
    from diffstyler.transfer import DiffStyler
    st = DiffStyler(pipe)
    lora = None
    if a.lora:
        lay = sample_layout(np.random.default_rng(555))  # eval.py's style picture
        lora = st.train_lora(Image.fromarray(render(lay, "stripes")[0]), caption(lay, "stripes"), seed=0, progress=False,
                             name="probe", rank=a.rank, alpha=a.rank, steps=a.steps, lr=a.lr)
    rng = np.random.default_rng(E.CONTENT_SEED)
    contents = [sample_layout(rng) for _ in range(a.contents)]
    return st, lora, contents


def settle(pipe, a):
    """Along a styled trajectory without injection: IoU of each step's predicted z0 (decoded) with the content's masks
    and with the final picture. Injection can only keep what is decided while it acts."""
    from diffstyler.lora import use_adapter
    from diffstyler.models import decode_latents
    st, lora, contents = _setup(pipe, a)
    rows = []
    for lay in contents:
        img, masks = render(lay, "flat")
        src = st.invert(Image.fromarray(img), a.num_steps, a.num_steps, record=None, progress=False, fixed_point_iters=2)
        sched = pipe.scheduler; sched.set_timesteps(a.num_steps)
        c, u = pipe.encode_prompt(caption(lay, "stripes" if lora else "checker"), "cpu", 1, True, "")
        emb, z, preds = torch.cat([u, c]), src.latents[:1].clone(), []
        with torch.no_grad(), (use_adapter(pipe.unet, lora.name) if lora else contextlib.nullcontext()):
            for t in sched.timesteps:
                o = pipe.unet(torch.cat([z, z]), t, encoder_hidden_states=emb).sample
                r = sched.step(o[:1] + a.guidance * (o[1:] - o[:1]), t, z); z = r.prev_sample
                x = decode_latents(pipe, r.pred_original_sample)[0].permute(1, 2, 0).clamp(-1, 1).add(1).mul(127.5)
                preds.append(x.round().byte().numpy())
        fin = object_mask(preds[-1])
        rows.append([(content_iou(p, masks), float((object_mask(p) & fin).sum() / max((object_mask(p) | fin).sum(), 1)))
                     for p in preds])
    m = np.mean(rows, 0)
    print("timestep               ", " ".join(f"{int(t):4d}" for t in pipe.scheduler.timesteps))
    print("IoU(z0_i, content)     ", " ".join(f"{v:4.2f}" for v in m[:, 0]))
    print("IoU(z0_i, final)       ", " ".join(f"{v:4.2f}" for v in m[:, 1]))


def parts(pipe, a):
    "Content IoU and the classifier's verdict for the paper preset, its parts, and longer thresholds."
    net = load_classifier(a.classifier)
    st, lora, contents = _setup(pipe, a)
    S = a.num_steps
    paper = InjectionConfig.paper(S, guidance_scale=a.guidance)
    cfgs = {"none": paper.replace(feature_steps=0, attention_steps=0), "paper": paper,
            "features only": paper.replace(attention_steps=0), "attention only": paper.replace(feature_steps=0)}
    cfgs.update({f"both {k}/{S}": paper.replace(feature_steps=k, attention_steps=k) for k in (S * 3 // 4, S - 2, S)})
    styles = ["stripes"] if lora else ["checker", "grid"]
    res = {k: [] for k in cfgs}
    pics = []
    for lay in contents:
        img, masks = render(lay, "flat")
        src = st.invert(Image.fromarray(img), S, S, record="all", progress=False, fixed_point_iters=2)
        for s in styles:
            row = [img]
            for n, c in cfgs.items():
                im = st.transfer(src, style=lora, prompt=caption(lay, s), config=c, progress=False).image
                res[n].append((content_iou(im, masks), classify(net, [im])[0] == s, texture_scores(im)[s]))
                row.append(np.asarray(im))
            pics.append(np.concatenate(row, 1))
    for n, v in res.items():
        m = np.mean(v, 0)
        print(f"{n:>16}: content IoU {m[0]:.3f}  style share {m[1]:.2f}  texture {m[2]:.2f}")
    if a.grid: Image.fromarray(np.concatenate(pics, 0)).save(a.grid); print("columns: content,", ", ".join(cfgs))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("probe", choices=["words", "layers", "settle", "parts"]); ap.add_argument("model")
    ap.add_argument("--guidance", type=float, default=7.5); ap.add_argument("--num-steps", type=int, default=25)
    ap.add_argument("--contents", type=int, default=3); ap.add_argument("--lora", action="store_true")
    ap.add_argument("--rank", type=int, default=16); ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--steps", type=int, default=200); ap.add_argument("--classifier", default=str(CLASSIFIER))
    ap.add_argument("--threads", type=int, default=1); ap.add_argument("--grid", default=None, help="words: save the pictures")
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    globals()[a.probe](load_pipeline(a.model), a)


if __name__ == "__main__":
    main()
