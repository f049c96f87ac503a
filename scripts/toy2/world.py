"""The second toy world (prototype): scenes, styles, the renderer, a PCA patch VAE and the style classifier.

A scene is a *layout* (1-2 coloured shapes on a named background) rendered in a *style*. Every style is a whole-scene
rendering anchored to the 4x4 patch grid of the VAE (no random phase), so one style word means one look:

- flat:    plain fills.
- checker: a 2-px checkerboard inside every 4x4 patch, over the whole scene (bright pixels darkened, dark lightened).
- grid:    the last row and column of every 4x4 patch marked, over the whole scene (a 4-px grid).
- outline: pastel fills (halfway to white) inside a thick dark outline (line work + palette).
- stripes: (held out) diagonal 2-px stripes, period 4 px, over the whole scene.
- dots:    (held out) a 2x2 dot at the centre of every 4x4 patch, over the whole scene.

Why: a texture that repeats with the patch grid is, in the latent of a 4x4-patch VAE, a fixed offset at each latent
pixel (a point-wise function of the local colour), which a small UNet learns fast and a one-image LoRA can add; the
issue's feasibility run showed that random-phase 16-px textures were still unlearned after 4,000 CPU steps.
Objects stay saturated and backgrounds grey under every style, so the chroma rule (`content_iou`) and the colour /
background rules of diffstyler.toy still read a styled picture correctly.
"""
from __future__ import annotations
import math, json
from pathlib import Path
from typing import Sequence, Tuple, Optional
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from diffstyler.toy import SHAPES, COLORS, BACKGROUNDS, shape_mask, PatchVAE, toy_vae

STYLES = ("flat", "checker", "grid", "outline", "stripes", "dots")
HELD_OUT_STYLES = ("stripes", "dots")
BASE_STYLES = tuple(s for s in STYLES if s not in HELD_OUT_STYLES)
WORDS = ("background outline checker stripes triangle painting circle square yellow style photo green white black "
         "star blue gray grid flat dots and sss red on of in a ,").split()
SIZE = 64


# ---------------------------------------------------------------------------------------------------------- layouts
def sample_layout(rng: np.random.Generator, max_objects: int = 2) -> dict:
    "A random layout: 1..max_objects (shape, colour) pairs with centres and radii (little overlap), and a background."
    n = int(rng.integers(1, max_objects + 1))
    shapes = [(SHAPES[rng.integers(4)], list(COLORS)[rng.integers(4)]) for _ in range(n)]
    background = list(BACKGROUNDS)[rng.integers(3)]
    for _ in range(100):
        radii = rng.uniform(10, 16, n)
        centers = [tuple(rng.uniform(r + 2, SIZE - r - 2, 2)) for r in radii]
        if all(math.dist(centers[i], centers[j]) > 0.9 * (radii[i] + radii[j]) for i in range(n) for j in range(i)): break
    return dict(shapes=shapes, background=background, centers=[tuple(map(float, c)) for c in centers],
                radii=[float(r) for r in radii])


def caption(layout: dict, style: str) -> str:
    """The style word comes first: the toy's text encoder is causal (CLIP's mask), so a word's embedding depends only on
    the words before it; first, the style word's token means one thing in every caption (run r2 put it last)."""
    objs = " and ".join(f"a {c} {s}" for s, c in layout["shapes"])
    return f"{style} style, {objs} on {layout['background']} background"


# ---------------------------------------------------------------------------------------------------------- styles
_Y, _X = np.mgrid[0:SIZE, 0:SIZE]
PATTERNS = {  # 1 = marked pixel; every pattern repeats with the 4x4 patch grid
    "checker": (((_X // 2) + (_Y // 2)) % 2).astype(np.float32),
    "grid": ((_X % 4 == 3) | (_Y % 4 == 3)).astype(np.float32),
    "stripes": (((_X + _Y) % 4) < 2).astype(np.float32),
    "dots": (np.isin(_X % 4, (1, 2)) & np.isin(_Y % 4, (1, 2))).astype(np.float32),
}


def _modulate(rgb: np.ndarray, t: np.ndarray, amount: float = 0.5) -> np.ndarray:
    "Darken bright colours / lighten dark ones where texture `t` is 1 (keeps the hue, so chroma rules still see it)."
    lum = rgb.mean(-1, keepdims=True)
    dark = rgb * (1 - amount)
    light = rgb + (255 - rgb) * amount * 0.8
    return np.where(lum > 70, dark, light) * t[..., None] + rgb * (1 - t[..., None])


def _coverage(layout):
    "Per-object coverage maps (occlusion applied; later objects on top) and the outline-interior maps."
    covs, inner = [], []
    for (shape, _), (cx, cy), r in zip(layout["shapes"], layout["centers"], layout["radii"]):
        c = shape_mask(shape, cx, cy, r, SIZE)
        i = shape_mask(shape, cx, cy, r - 4, SIZE)
        covs = [p * (1 - c) for p in covs] + [c]
        inner = [p * (1 - c) for p in inner] + [i]
    return covs, inner


def render(layout: dict, style: str, cov=None) -> Tuple[np.ndarray, np.ndarray]:
    "Render `layout` in `style` -> (uint8 image [64,64,3], object masks [n,64,64] bool). `cov`: cached `_coverage`."
    if style not in STYLES: raise ValueError(f"style={style!r} is not one of {STYLES}")
    covs, inner = cov if cov is not None else _coverage(layout)
    img = np.broadcast_to(np.array(BACKGROUNDS[layout["background"]], np.float32), (SIZE, SIZE, 3)).copy()
    for (shape, colour), c, i in zip(layout["shapes"], covs, inner):
        fill = np.array(COLORS[colour], np.float32)
        if style == "outline":
            pastel = fill + (255 - fill) * 0.5  # the ring (covered, not in the shape shrunk by 4 px) is dark
            obj = pastel[None, None] * i[..., None] + fill[None, None] * 0.5 * np.clip(c - i, 0, 1)[..., None]
            img = img * (1 - c[..., None]) + obj
        else:
            img = img * (1 - c[..., None]) + fill[None, None] * c[..., None]
    if style in PATTERNS: img = _modulate(img, PATTERNS[style])
    img = np.clip(img + 0.5, 0, 255).astype(np.uint8)
    masks = np.stack([c >= 0.5 for c in covs])
    return img, masks


def to_tensor(images) -> torch.Tensor:
    "uint8 [N,64,64,3] (or list) -> float [N,3,64,64] in [-1,1]."
    a = np.stack(images) if isinstance(images, (list, tuple)) else images
    if a.ndim == 3: a = a[None]
    return torch.from_numpy(np.ascontiguousarray(a)).permute(0, 3, 1, 2).float() / 127.5 - 1


def render_set(seed: int, n_layouts: int, styles: Sequence[str]):
    "Images [n_layouts*len(styles),64,64,3] uint8 (layout-major), captions, layouts."
    rng = np.random.default_rng(seed)
    imgs, caps, lays = [], [], []
    for _ in range(n_layouts):
        lay = sample_layout(rng); cov = _coverage(lay); lays.append(lay)
        for s in styles:
            imgs.append(render(lay, s, cov)[0]); caps.append(caption(lay, s))
    return np.stack(imgs), caps, lays


def _patch_residual(lum: np.ndarray) -> np.ndarray:
    "Luminance minus its 4x4-patch mean: what a texture adds inside each VAE patch."
    m = lum.reshape(SIZE // 4, 4, SIZE // 4, 4).mean((1, 3))
    return lum - np.repeat(np.repeat(m, 4, 0), 4, 1)


_REF = {k: _patch_residual(p) for k, p in PATTERNS.items()}


def texture_scores(image) -> dict:
    """How strongly each grid-anchored texture is present: |correlation| of the picture's within-patch luminance
    residual with the texture's (0 = absent; a clean render of that style scores about 0.9-1; a phase-shifted copy
    of another texture scores low). A continuous companion to the classifier."""
    a = np.asarray(image.convert("RGB") if hasattr(image, "convert") else image, np.float64).mean(-1)
    r = _patch_residual(a).ravel()
    out = {}
    for k, p in _REF.items():
        p = p.ravel()
        out[k] = float(abs(r @ p) / (np.linalg.norm(r) * np.linalg.norm(p) + 1e-8))
    return out


# ---------------------------------------------------------------------------------------------------------- the VAE
# the PCA VAE moved into the package (diffstyler.toy.PatchVAE / toy_vae, chapter 8c); the prototype's names stay
PCAVAE = PatchVAE          # loads the folders saved here (their config names the class PCAVAE)


def fit_pca_vae(latent_channels: int = 24, n_layouts: int = 200, seed: int = 7):
    "The package's `toy_vae` (a PCA of 4x4 patches of renders of every style), as this prototype first fitted it."
    return toy_vae(latent_channels, n_layouts, seed)


def psnr_u8(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(((a.astype(np.float64) - b.astype(np.float64)) ** 2).mean())
    return 128.1 if mse < 1e-8 else 10 * math.log10(255 ** 2 / mse)


def to_uint8(x: torch.Tensor) -> np.ndarray:
    return ((x.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy()


# ---------------------------------------------------------------------------------------------------------- classifier
class StyleNet(nn.Module):
    """A small CNN that names the style of a 64x64 picture. Its first layer is a 4x4, stride-4 convolution: it reads
    each VAE patch, where every texture of this world lives; a 3x3 layer sees line work across patches; then
    average and max pooling over the picture, and a linear layer over the six styles."""
    def __init__(self, n: int = len(STYLES), w: int = 32):
        super().__init__()
        self.patch = nn.Conv2d(3, w, 4, 4)
        self.conv = nn.Conv2d(w, w, 3, padding=1)
        self.head = nn.Linear(2 * w, n)
    def forward(self, x):  # x [B,3,64,64] in [-1,1]
        h = F.relu(self.conv(F.relu(self.patch(x))))
        return self.head(torch.cat([h.mean((2, 3)), h.amax((2, 3))], 1))


def _augment(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    "What a generated picture may look like: noise of up to 10/255, a small global brightness shift."
    b = len(x)
    x = x + torch.randn(x.shape, generator=g) * (torch.rand(b, 1, 1, 1, generator=g) * 10 / 127.5)
    x = x + (torch.rand(b, 1, 1, 1, generator=g) - 0.5) * 0.1
    return x.clamp(-1, 1)


def train_classifier(vae: Optional[PCAVAE] = None, steps: int = 1500, batch: int = 96, seed: int = 3, log=print) -> StyleNet:
    "Train StyleNet on (VAE-decoded, if `vae`) renders of every style (held-out styles included), noise-augmented."
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    imgs, _, _ = render_set(seed, 600, STYLES)
    x = to_tensor(imgs)
    if vae is not None:
        with torch.no_grad(): x = torch.cat([vae(x[i:i + 512]).sample for i in range(0, len(x), 512)]).clamp(-1, 1)
    y = torch.arange(len(STYLES)).repeat(len(x) // len(STYLES))
    net = StyleNet()
    opt = torch.optim.AdamW(net.parameters(), 3e-3, weight_decay=1e-4)
    for step in range(steps):
        idx = torch.randint(0, len(x), (batch,), generator=g)
        loss = F.cross_entropy(net(_augment(x[idx], g)), y[idx])
        opt.zero_grad(); loss.backward(); opt.step()
        if step % 250 == 0: log(f"classifier step {step} loss {loss.item():.4f}")
    return net.eval().requires_grad_(False)


@torch.no_grad()
def classify(net: StyleNet, images) -> list:
    "Style names for a list of PIL images / uint8 arrays [64,64,3]."
    a = np.stack([np.asarray(im.convert("RGB") if hasattr(im, "convert") else im) for im in images])
    return [STYLES[i] for i in net(to_tensor(a)).argmax(1).tolist()]


@torch.no_grad()
def classifier_accuracy(net: StyleNet, vae: Optional[PCAVAE] = None, n_layouts: int = 100, seed: int = 99) -> dict:
    "Accuracy per style on clean renders of fresh layouts (and through the VAE if `vae`)."
    imgs, _, _ = render_set(seed, n_layouts, STYLES)
    x = to_tensor(imgs)
    if vae is not None: x = vae(x).sample.clamp(-1, 1)
    pred = net(x).argmax(1)
    y = torch.arange(len(STYLES)).repeat(n_layouts)
    return {s: float((pred[y == k] == k).float().mean()) for k, s in enumerate(STYLES)}


def save_classifier(net: StyleNet, path, accuracy: Optional[dict] = None):
    from safetensors.torch import save_file
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(path),
              metadata={"styles": json.dumps(STYLES), "accuracy": json.dumps(accuracy or {})})


def load_classifier(path) -> StyleNet:
    from safetensors.torch import load_file
    net = StyleNet(); net.load_state_dict(load_file(str(path)))
    return net.eval().requires_grad_(False)


if __name__ == "__main__":  # train the style classifier on VAE-decoded renders and print its accuracy
    import argparse, time
    ap = argparse.ArgumentParser(); ap.add_argument("--out", required=True); ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--latent-channels", type=int, default=24)
    a = ap.parse_args()
    torch.set_num_threads(1)
    t0 = time.time()
    vae = fit_pca_vae(a.latent_channels)
    net = train_classifier(vae, steps=a.steps)
    acc_clean, acc_vae = classifier_accuracy(net), classifier_accuracy(net, vae)
    print("accuracy on clean renders (100 fresh layouts per style):", {k: round(v, 3) for k, v in acc_clean.items()})
    print("accuracy on VAE-decoded renders:                      ", {k: round(v, 3) for k, v in acc_vae.items()})
    print(f"min clean {min(acc_clean.values()):.3f}, min decoded {min(acc_vae.values()):.3f}; {time.time() - t0:.0f} s")
    save_classifier(net, a.out, dict(clean=acc_clean, decoded=acc_vae))
