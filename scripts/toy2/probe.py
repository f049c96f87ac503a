#!/usr/bin/env python
"""Quick check that style words separate: the same noise sampled with each base style word (n layouts x 4 styles);
prints the classifier's verdicts and the texture scores per prompted style, and saves a grid."""
import sys, argparse
from pathlib import Path
sys.path.insert(0, str(Path(__file__).parent))
import numpy as np, torch
from world import BASE_STYLES, PATTERNS, sample_layout, caption, classify, load_classifier, texture_scores
from model import load_pipeline
from eval import save_grid

ap = argparse.ArgumentParser(); ap.add_argument("--model"); ap.add_argument("--classifier"); ap.add_argument("--n", type=int, default=4)
ap.add_argument("--guidance", type=float, default=7.5); ap.add_argument("--grid", default=None)
a = ap.parse_args(); torch.set_num_threads(1)
pipe, net = load_pipeline(a.model), load_classifier(a.classifier)
rng = np.random.default_rng(2024)
lays = [sample_layout(rng) for _ in range(a.n)]
grid, res = [], {s: [] for s in BASE_STYLES}
for i, lay in enumerate(lays):
    ims = pipe([caption(lay, s) for s in BASE_STYLES], num_inference_steps=25, guidance_scale=a.guidance,
               generator=[torch.Generator().manual_seed(i) for _ in BASE_STYLES], height=64, width=64).images
    for s, im, p in zip(BASE_STYLES, ims, classify(net, ims)): res[s].append((p, texture_scores(im)))
    grid.append(ims)
for s in BASE_STYLES:
    print(f"{s:8s} classifier {[p for p, _ in res[s]]}  texture " +
          " ".join(f"{k}={np.mean([t[k] for _, t in res[s]]):.2f}" for k in PATTERNS))
if a.grid: save_grid(grid, a.grid, 3)
