#!/usr/bin/env python
"""Train the toy world's frozen style classifier (`diffstyler.toy.metrics.StyleNet`) and ship its weights.

Training data: random scenes of every style in `STYLES` (held-out ones included), half from `render_scene` (random
shapes, colours, backgrounds and placement seeds), half from `ToyShapes` (random layouts), each passed through the toy model's VAE (encode, then decode: what a transfer's output looks like), with mild
augmentation (pixel noise, a global brightness shift, a light blur). Fixed seeds. Prints the per-style accuracy on
fresh held-out renders (through the VAE) and the training time, then writes the weights (safetensors, with the styles,
the accuracy and the recipe in its metadata) atomically.

    OMP_NUM_THREADS=1 python scripts/train_style_classifier.py            # -> diffstyler/assets/toy/style_classifier.safetensors
    python scripts/train_style_classifier.py --out /tmp/sc.safetensors --steps 200 --per-style 60   # a quick try
"""
import argparse, json, os, tempfile, time
from pathlib import Path
import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from diffstyler.toy.world import STYLES, SHAPES, COLORS, BACKGROUNDS, ToyShapes, render_scene, to_tensor
from diffstyler.toy.model import load_toy_pipeline
from diffstyler.toy.metrics import StyleNet, STYLE_CLASSIFIER_FILE


def random_render(rng: np.random.Generator, style: str) -> np.ndarray:
    "One `render_scene` picture [64,64,3] uint8: 1-2 random objects, a random background, a random placement seed."
    n = int(rng.integers(1, 3))
    shapes = [(SHAPES[rng.integers(len(SHAPES))], list(COLORS)[rng.integers(len(COLORS))]) for _ in range(n)]
    img, _, _ = render_scene(shapes, list(BACKGROUNDS)[rng.integers(len(BACKGROUNDS))], style, seed=int(rng.integers(2 ** 31)))
    return np.asarray(img)


def style_set(seed: int, per_style: int):
    "`per_style` pictures of each style (half render_scene, half ToyShapes) -> uint8 [N,64,64,3], labels [N]."
    rng = np.random.default_rng(seed)
    imgs, labels = [], []
    for k, style in enumerate(STYLES):
        ds = ToyShapes(seed * 100 + k, styles=(style,))
        for i in range(per_style):
            imgs.append(random_render(rng, style) if i % 2 == 0 else ds[i]["image"]); labels.append(k)
    return np.stack(imgs), torch.tensor(labels)


@torch.no_grad()
def through_vae(vae, imgs: np.ndarray) -> torch.Tensor:
    "Encode then decode with the toy VAE: uint8 [N,64,64,3] -> float [N,3,64,64] in [-1,1]."
    x = to_tensor(imgs)
    out = []
    for i in range(0, len(x), 256):
        z = vae.encode(x[i:i + 256].to(vae.dtype)).latent_dist.mean
        out.append(vae.decode(z).sample.float().clamp(-1, 1))
    return torch.cat(out)


def augment(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    "What a generated picture may look like: pixel noise of up to 10/255, a global brightness shift, a light blur."
    b = len(x)
    blur = F.avg_pool2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), 3, 1)
    x = torch.lerp(x, blur, torch.rand(b, 1, 1, 1, generator=g) * 0.5)
    x = x + torch.randn(x.shape, generator=g) * (torch.rand(b, 1, 1, 1, generator=g) * 10 / 127.5)
    x = x + (torch.rand(b, 1, 1, 1, generator=g) - 0.5) * 0.1
    return x.clamp(-1, 1)


@torch.no_grad()
def accuracy(net, x, y) -> dict:
    pred = torch.cat([net(x[i:i + 512]).argmax(1) for i in range(0, len(x), 512)])
    return {s: float((pred[y == k] == k).float().mean()) for k, s in enumerate(STYLES)}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=str(STYLE_CLASSIFIER_FILE), help="weights file to write")
    ap.add_argument("--steps", type=int, default=2000); ap.add_argument("--batch", type=int, default=96)
    ap.add_argument("--per-style", type=int, default=500, help="training pictures per style")
    ap.add_argument("--test-per-style", type=int, default=100, help="held-out pictures per style")
    ap.add_argument("--seed", type=int, default=3); ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    t0 = time.time()
    vae = load_toy_pipeline().vae
    imgs, y = style_set(a.seed, a.per_style)
    x = through_vae(vae, imgs)
    timgs, ty = style_set(a.seed + 1000, a.test_per_style)  # fresh scenes: other seeds, other placements
    tx = through_vae(vae, timgs)
    t_data = time.time() - t0
    print(f"{len(x)} training and {len(tx)} held-out pictures rendered and passed through the VAE in {t_data:.0f} s", flush=True)

    torch.manual_seed(a.seed)
    g = torch.Generator().manual_seed(a.seed)
    net = StyleNet()
    opt = torch.optim.AdamW(net.parameters(), 3e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, 3e-3, total_steps=a.steps, pct_start=0.1)
    for step in range(a.steps):
        idx = torch.randint(0, len(x), (a.batch,), generator=g)
        loss = F.cross_entropy(net(augment(x[idx], g)), y[idx])
        opt.zero_grad(); loss.backward(); opt.step(); sched.step()
        if step % 250 == 0 or step == a.steps - 1: print(f"step {step} loss {loss.item():.4f}", flush=True)
    net.eval().requires_grad_(False)
    t_train = time.time() - t0 - t_data

    acc_train, acc = accuracy(net, x, y), accuracy(net, tx, ty)
    total = float(np.mean(list(acc.values())))
    print("held-out accuracy per style:", {k: round(v, 3) for k, v in acc.items()})
    print(f"held-out accuracy {total:.3f} (min {min(acc.values()):.3f}) on {len(tx)} fresh renders through the VAE; "
          f"train accuracy {float(np.mean(list(acc_train.values()))):.3f}")
    print(f"training {t_train:.0f} s, data {t_data:.0f} s, {a.threads} thread(s)")

    out = Path(a.out); out.parent.mkdir(parents=True, exist_ok=True)
    meta = dict(styles=json.dumps(list(STYLES)), accuracy=json.dumps({k: round(v, 4) for k, v in acc.items()}),
                recipe=json.dumps(dict(steps=a.steps, batch=a.batch, per_style=a.per_style, seed=a.seed,
                                       test_per_style=a.test_per_style, train_seconds=round(t_train), threads=a.threads)))
    fd, tmp = tempfile.mkstemp(dir=out.parent, suffix=".tmp"); os.close(fd)
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, tmp, metadata=meta)
    os.chmod(tmp, 0o644); os.replace(tmp, out)  # atomic: a reader never sees half a file
    print(f"wrote {out} ({out.stat().st_size / 1024:.0f} KB)")


if __name__ == "__main__":
    main()
