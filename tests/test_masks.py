"""Mask sources (diffstyler.masks): mask files incl. the authors' real FastSAM masks, latent resizing, and FastSAM
prompt selection, checked against ultralytics' own FastSAMPredictor.prompt and run end to end on a random-weight
FastSAM-architecture checkpoint built offline."""
import os, sys, tempfile, types, warnings
from pathlib import Path

# ultralytics must stay offline and keep its settings out of the home folder (set before anything imports it)
os.environ.setdefault("YOLO_OFFLINE", "1")
os.environ.setdefault("YOLO_AUTOINSTALL", "False")
os.environ.setdefault("YOLO_CONFIG_DIR", tempfile.mkdtemp(prefix="yolo-config-"))

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from diffstyler.core import InputError
from diffstyler import masks as M

ROOT = Path(__file__).resolve().parent.parent
SHARED = next((p for p in [ROOT.parent / "shared", Path("/work/shared")] if (p / "data" / "authors-demo").is_dir()), None)
DEMO = SHARED / "data" / "authors-demo" if SHARED else None
needs_demo = pytest.mark.skipif(DEMO is None, reason="the authors' demo masks (../shared/data/authors-demo) are not present")


def disk(h=96, w=128, cx=40, cy=50, r=20):
    yy, xx = np.mgrid[:h, :w]
    return (xx - cx) ** 2 + (yy - cy) ** 2 <= r * r


# ---------------------------------------------------------------- mask files: the authors' real cases

@needs_demo
def test_authors_masks_L_and_RGB_are_complementary():
    deer = M.load_mask(DEMO / "deer1_deer.png")        # 8-bit greyscale
    grass = M.load_mask(DEMO / "deer1_grass.png")      # RGB
    assert Image.open(DEMO / "deer1_grass.png").mode == "RGB" and Image.open(DEMO / "deer1_deer.png").mode == "L"
    assert deer.shape == grass.shape == (512, 512) and deer.dtype == torch.float32
    assert set(deer.unique().tolist()) == {0.0, 1.0} and set(grass.unique().tolist()) == {0.0, 1.0}
    assert torch.equal(deer + grass, torch.ones(512, 512))          # disjoint and covering: a two-style run's masks
    assert abs(deer.mean().item() - 0.27607) < 1e-4


@needs_demo
def test_authors_face_mask_resized_to_an_image_size_warns_and_keeps_area():
    face = M.load_mask(DEMO / "girl1_face.png")
    with pytest.warns(UserWarning, match="resized to the image"):
        small = M.load_mask(DEMO / "girl1_face.png", size=(256, 256))
    assert small.shape == (256, 256)
    assert abs(small.mean().item() - face.mean().item()) < 1e-3
    with warnings.catch_warnings():
        warnings.simplefilter("error")                       # same size: no warning
        M.load_mask(DEMO / "girl1_face.png", size=(512, 512))
    with pytest.warns(UserWarning, match="aspect ratio"):
        M.load_mask(DEMO / "girl1_face.png", size=(512, 256))


@needs_demo
@pytest.mark.parametrize("mode,tol", [("area", 1e-6), ("bilinear", 2e-3), ("nearest", 1e-2)])
def test_latent_mask_keeps_area_of_real_masks(mode, tol):
    for name in ("deer1_deer.png", "deer1_grass.png", "girl1_face.png"):
        m = M.load_mask(DEMO / name)
        z = M.to_latent_mask(m, (64, 64), mode=mode)
        assert z.shape == (1, 1, 64, 64) and z.dtype == torch.float32
        assert abs(z.mean().item() - m.mean().item()) < tol, (name, mode)


@needs_demo
def test_deer_and_grass_latent_masks_still_partition_after_area_resize():
    d = M.to_latent_mask(DEMO / "deer1_deer.png", 64)
    g = M.to_latent_mask(DEMO / "deer1_grass.png", 64)
    assert torch.allclose(d + g, torch.ones_like(d), atol=1e-6)   # soft edges, but still a partition of unity


# ---------------------------------------------------------------- mask files: formats and errors

def test_formats_give_the_same_mask(tmp_path):
    m = disk()
    ref = m.astype(np.float32)
    Image.fromarray(m.astype(np.uint8) * 255).save(tmp_path / "m.png")
    Image.fromarray((m * 65535).astype(np.uint16)).save(tmp_path / "m16.png")
    np.save(tmp_path / "m.npy", m.astype(np.float64))
    rgba = np.zeros(m.shape + (4,), np.uint8); rgba[..., :3] = 255; rgba[..., 3] = m * 255
    green = np.zeros(m.shape + (3,), np.uint8); green[..., 1] = m * 255
    for src in [tmp_path / "m.png", str(tmp_path / "m16.png"), tmp_path / "m.npy", m, m.astype(np.uint8),
                m.astype(np.float32) * 255, torch.from_numpy(ref), torch.from_numpy(ref)[None], torch.from_numpy(ref)[None, None],
                torch.from_numpy(ref).half(), Image.fromarray(rgba, "RGBA"), green, np.repeat(ref[None], 3, 0).astype(np.float32),
                Image.fromarray(m.astype(np.uint8) * 255).convert("1"), Image.fromarray(m.astype(np.uint8) * 255).convert("P")]:
        out = M.load_mask(src)
        assert out.shape == m.shape and out.dtype == torch.float32, type(src)
        assert np.array_equal(out.numpy(), ref), type(src)


def test_jpeg_mask_is_soft_until_thresholded(tmp_path):
    m = disk()
    Image.fromarray(m.astype(np.uint8) * 255).save(tmp_path / "m.jpg", quality=70)
    soft = M.load_mask(tmp_path / "m.jpg")
    assert 0 <= soft.min() and soft.max() <= 1
    assert not set(soft.unique().tolist()) <= {0.0, 1.0}          # compression noise is there...
    hard = M.load_mask(tmp_path / "m.jpg", threshold=0.5)
    assert set(hard.unique().tolist()) <= {0.0, 1.0}
    assert (hard.numpy() != m).mean() < 0.01                       # ...and thresholding recovers the mask


def test_soft_float_values_are_kept():
    a = np.linspace(0, 1, 100, dtype=np.float32).reshape(10, 10)
    assert np.allclose(M.load_mask(a).numpy(), a)


@pytest.mark.parametrize("src,msg", [
    (np.full((4, 4), np.nan), "NaN"),
    (np.zeros(7), "dimensions"),
    (np.zeros((2, 3, 4, 4)), "batch of 2"),
    (np.zeros((5, 6, 7)), "shape"),
    (-np.ones((4, 4)), "negative"),
    (np.full((4, 4), 3.0e5), "values up to"),
    (np.zeros((0, 4)), "zero size"),
    (np.array([["a"]]), "dtype"),
    (1.5, "give a file path"),
])
def test_bad_arrays_are_refused_with_a_clear_error(src, msg):
    with pytest.raises(InputError, match=msg):
        M.load_mask(src)


def test_bad_files_are_refused_with_a_clear_error(tmp_path):
    with pytest.raises(InputError, match="does not exist"): M.load_mask(tmp_path / "nope.png")
    with pytest.raises(InputError, match="is a folder"): M.load_mask(tmp_path)
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(InputError, match="empty file"): M.load_mask(tmp_path / "empty.png")
    (tmp_path / "junk.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(InputError, match="cannot be read as an image"): M.load_mask(tmp_path / "junk.png")
    (tmp_path / "junk.npy").write_bytes(b"not numpy")
    with pytest.raises(InputError, match="NumPy"): M.load_mask(tmp_path / "junk.npy")
    with pytest.raises(InputError, match="size="): M.load_mask(disk(), size=(10,))
    with pytest.raises(InputError, match="threshold"): M.load_mask(disk(), threshold=0)
    # every message is one line
    try: M.load_mask(tmp_path / "junk.png")
    except InputError as e: assert "\n" not in str(e)


def test_empty_mask_warns_but_loads():
    with pytest.warns(UserWarning, match="all zeros"):
        m = M.load_mask(np.zeros((8, 8), np.uint8))
    assert m.sum() == 0


# ---------------------------------------------------------------- latent masks

def test_area_is_kept_within_tolerance():
    for r in (3, 10, 40):
        m = disk(512, 512, 200, 260, r).astype(np.float32)
        assert abs(M.to_latent_mask(m, 64).mean().item() - m.mean()) < 1e-6          # whole-number factor: exact
        assert abs(M.to_latent_mask(m, 48, "bilinear").mean().item() - m.mean()) < 2e-3
        t = M.to_latent_mask(m, 64, threshold=0.5)
        assert abs(t.sum().item() * 64 - m.sum()) <= 2 * np.pi * r * 8 / 2 + 64       # at most a boundary's worth


def test_thin_structures_area_nearest_threshold():
    m = np.zeros((512, 512), np.float32); m[:, 101] = 1                  # a one-pixel vertical line
    area = M.to_latent_mask(m, 64)[0, 0]
    assert torch.allclose(area[:, 12], torch.full((64,), 1 / 8)) and area.sum() == 64 / 8
    assert M.to_latent_mask(m, 64, threshold=0.5).sum() == 0             # majority vote erases it
    assert torch.equal(M.to_latent_mask(m, 64, threshold=1e-3)[0, 0, :, 12], torch.ones(64))  # any overlap keeps it
    near = M.to_latent_mask(m, 64, "nearest")
    assert near.sum() == 0                                                # nearest samples columns 8i+4, never 101


def test_dilate_and_feather_in_latent_pixels():
    one = torch.zeros(64, 64); one[20, 30] = 1
    d = M.to_latent_mask(one, 64, dilate=3)
    assert d.sum() == 49 and d[0, 0, 17:24, 27:34].min() == 1
    f = M.to_latent_mask(one, 64, dilate=3, feather=2.0)
    assert abs(f.sum().item() - 49) < 1e-3 and f.max() <= 1 and f.min() >= 0 and (f > 1e-3).sum() > 49
    assert f[0, 0, 20, 30] > f[0, 0, 20, 36] > f[0, 0, 20, 40]          # a smooth fall-off


def test_latent_hw_order_and_latent_tensor():
    m = np.zeros((256, 512), np.float32); m[:128] = 1                     # top half, H=256 W=512
    z = M.to_latent_mask(m, torch.zeros(2, 4, 32, 64))
    assert z.shape == (1, 1, 32, 64)
    assert z[0, 0, :16].min() == 1 and z[0, 0, 16:].max() == 0
    with pytest.raises(InputError, match="mode="): M.to_latent_mask(m, (32, 64), mode="bicubic")
    with pytest.raises(InputError, match="latent_hw"): M.to_latent_mask(m, "64")
    with pytest.raises(InputError, match="dilate"): M.to_latent_mask(m, (32, 64), dilate=1.5)
    with pytest.raises(InputError, match="feather"): M.to_latent_mask(m, (32, 64), feather=-1)
    with pytest.warns(UserWarning, match="aspect ratio"): M.to_latent_mask(m, (64, 64))


def test_show_mask_overlays_and_resizes():
    img = Image.new("RGB", (64, 48), (10, 20, 30))
    m = np.zeros((48, 64), bool); m[10:20, 5:15] = True
    out = np.asarray(M.show_mask(img, m, color=(250, 0, 0), alpha=1.0)).astype(int)
    assert out.shape == (48, 64, 3)
    assert (out[10:20, 5:15] == [250, 0, 0]).all() and (out[30:, 30:] == [10, 20, 30]).all()
    lat = torch.zeros(1, 1, 6, 8); lat[0, 0, 0, 0] = 1                    # a latent mask shows as 8x8 blocks
    out = np.asarray(M.show_mask(img, lat, color=(250, 0, 0), alpha=1.0)).astype(int)
    assert (out[:8, :8] == [250, 0, 0]).all() and (out[8:, 8:] == [10, 20, 30]).all()
    drawn = np.asarray(M.show_mask(img, m, alpha=0.0, points=[[40, 30]], labels=[0], boxes=[[1, 1, 60, 40]])).astype(int)
    assert (drawn != [10, 20, 30]).any(-1).sum() > 20                     # prompts are drawn


# ---------------------------------------------------------------- FastSAM selection logic (synthetic mask stacks)

def scene_stack():
    "Nested masks like FastSAM's: big square, inner square inside it, a disjoint bar, a disk overlapping the big square."
    H, W = 60, 80
    s = np.zeros((4, H, W), bool)
    s[0, 10:50, 10:50] = True
    s[1, 20:30, 20:30] = True
    s[2, 5:55, 60:65] = True
    s[3] = disk(H, W, 50, 45, 8)
    return torch.from_numpy(s)


def names(idx): return torch.nonzero(idx).flatten().tolist()


def test_point_selection():
    s = scene_stack()
    assert names(M.select_masks(s, points=[[25, 25]])) == [0, 1]                       # union of masks containing it
    assert names(M.select_masks(s, points=[[25, 25], [15, 15]], labels=[1, 0])) == [1]  # a background point removes
    assert names(M.select_masks(s, points=[[62, 30]])) == [2]
    assert names(M.select_masks(s, points=[[25, 25], [62, 30]])) == [0, 1, 2]
    assert names(M.select_masks(s, points=[[62, 30]], labels=[0])) == [0, 1, 3]         # only background: all others
    assert names(M.select_masks(s, points=[[2, 2]])) == []                              # nothing there
    assert names(M.select_masks(s, points=[[25.4, 24.6]])) == [0, 1]                    # float pixels are rounded


def test_box_selection_is_best_iou_per_box():
    s = scene_stack()
    assert names(M.select_masks(s, boxes=[[10, 10, 50, 50]])) == [0]
    assert names(M.select_masks(s, boxes=[[19, 19, 31, 31]])) == [1]
    assert names(M.select_masks(s, boxes=[[19, 19, 31, 31], [58, 0, 70, 60]])) == [1, 2]
    assert names(M.select_masks(s, boxes=[-5, -5, 200, 200])) == [0]                    # clipped to the image, one box as a flat list
    ious = [(s[i, 10:50, 10:50].sum() / (1600 + s[i].sum() - s[i, 10:50, 10:50].sum())).item() for i in range(4)]
    assert int(np.argmax(ious)) == 0


def test_text_scores_pick_best_mask_per_text():
    s = scene_stack()
    assert names(M.select_masks(s, text_scores=[[0.1, 0.9, 0.2, 0.3]])) == [1]
    assert names(M.select_masks(s, text_scores=[[0.1, 0.9, 0.2, 0.3], [5, 0, 0, 0]])) == [0, 1]
    assert names(M.select_masks(s, text_scores=[[0.1, float("-inf"), 0.2, float("-inf")]])) == [2]
    assert names(M.select_masks(s, text_scores=[[float("-inf")] * 4])) == []            # nothing was scored
    with pytest.raises(InputError, match="text_scores"):
        M.select_masks(s, text_scores=[[1, 2]])


def test_prompts_combine_by_union_and_bad_prompts_fail():
    s = scene_stack()
    assert names(M.select_masks(s, points=[[62, 30]], boxes=[[19, 19, 31, 31]], text_scores=[[0, 0, 0, 1]])) == [1, 2, 3]
    with pytest.raises(InputError, match="outside the 80x60 image"): M.select_masks(s, points=[[80, 10]])
    with pytest.raises(InputError, match="one label"): M.select_masks(s, points=[[1, 1]], labels=[1, 0])
    with pytest.raises(InputError, match="must be 1"): M.select_masks(s, points=[[1, 1]], labels=[3])
    with pytest.raises(InputError, match="empty"): M.select_masks(s, boxes=[[30, 30, 30, 40]])
    with pytest.raises(InputError, match="x1, y1, x2, y2"): M.select_masks(s, boxes=[[1, 2, 3]])
    with pytest.raises(InputError, match="stack"): M.select_masks(s[0], points=[[1, 1]])
    assert M.select_masks(torch.zeros(0, 5, 5, dtype=torch.bool), points=[[1, 1]]).shape == (0,)


def test_selection_matches_ultralytics_fastsam_predictor_prompt(tmp_path):
    "Our select_masks against the installed ultralytics' FastSAMPredictor.prompt on random nested mask stacks."
    pytest.importorskip("ultralytics")
    from ultralytics.engine.results import Results
    from ultralytics.models.fastsam import FastSAMPredictor
    pred = FastSAMPredictor(overrides=dict(project=str(tmp_path), verbose=False))
    pred.device = torch.device("cpu")
    rng = np.random.default_rng(0)
    H, W = 48, 64
    for trial in range(40):
        n = int(rng.integers(1, 8))
        boxes = []
        for _ in range(n):
            x1, y1 = int(rng.integers(0, W - 4)), int(rng.integers(0, H - 4))
            boxes.append([x1, y1, int(rng.integers(x1 + 2, W + 1)), int(rng.integers(y1 + 2, H + 1))])
        masks = np.zeros((n, H, W), np.uint8)
        for i, (x1, y1, x2, y2) in enumerate(boxes):
            masks[i, y1:y2, x1:x2] = rng.random((y2 - y1, x2 - x1)) < 0.8
        data = torch.cat([torch.tensor(boxes, dtype=torch.float32), torch.full((n, 1), 0.9), torch.zeros(n, 1)], 1)
        res = Results(np.zeros((H, W, 3), np.uint8), path="x.jpg", names={0: "object"}, boxes=data, masks=torch.from_numpy(masks))
        k = int(rng.integers(1, 4))
        pts = np.stack([rng.integers(0, W, k), rng.integers(0, H, k)], 1).tolist()
        labels = rng.integers(0, 2, k).tolist()
        qbox = [[int(rng.integers(0, W // 2)), int(rng.integers(0, H // 2)), int(rng.integers(W // 2 + 1, W)), int(rng.integers(H // 2 + 1, H))]]
        for kw in (dict(points=pts, labels=labels), dict(bboxes=qbox), dict(points=pts, labels=labels, bboxes=qbox)):
            theirs = pred.prompt([res], **kw)[0].masks
            theirs = set() if theirs is None else {m.numpy().tobytes() for m in theirs.data.bool()}
            ours_idx = M.select_masks(torch.from_numpy(masks), points=kw.get("points"), labels=kw.get("labels"), boxes=kw.get("bboxes"))
            ours = {masks[i].astype(bool).tobytes() for i in names(ours_idx)}
            assert ours == theirs, (trial, kw)


# ---------------------------------------------------------------- FastSAM end to end, offline, random weights

@pytest.fixture(scope="session")
def random_ckpt(tmp_path_factory):
    pytest.importorskip("ultralytics")
    return M.make_random_fastsam(tmp_path_factory.mktemp("fastsam") / "fastsam-random.pt", scale="n", seed=0)


def test_import_does_not_import_ultralytics(monkeypatch):
    "Importing diffstyler.masks must not import ultralytics or clip (no network, no settings file, no auto-install)."
    import importlib
    for name in [n for n in sys.modules if n.split(".")[0] in ("ultralytics", "clip")]:
        monkeypatch.delitem(sys.modules, name)          # restored after the test
    importlib.reload(M)                                 # re-run the module's top level (cheaper than a new interpreter)
    assert not [n for n in sys.modules if n.split(".")[0] in ("ultralytics", "clip")]


def test_random_checkpoint_is_a_fastsam_segmenter(random_ckpt):
    img = Image.new("RGB", (96, 80), (120, 130, 140))
    masks, boxes, conf = M.fastsam_segments(img, checkpoint=random_ckpt, device="cpu", imgsz=128)
    assert masks.dtype == torch.bool and masks.shape[1:] == (80, 96) and len(masks) > 0
    assert boxes.shape == (len(masks), 4) and conf.shape == (len(masks),)
    assert (boxes[:, 2] <= 96).all() and (boxes[:, 3] <= 80).all()


def test_fastsam_point_box_text_end_to_end(random_ckpt, tmp_path):
    img = Image.new("RGB", (96, 80), (120, 130, 140))
    ImageDraw.Draw(img).ellipse([20, 20, 60, 60], fill=(220, 30, 30))
    img.save(tmp_path / "img.png")
    kw = dict(checkpoint=random_ckpt, device="cpu", imgsz=128)
    segs, boxes, _ = M.fastsam_segments(img, **kw)
    y, x = torch.nonzero(segs.any(0))[0].tolist()
    m = M.fastsam(tmp_path / "img.png", points=[[x, y]], **kw)                      # a path works as well as a PIL image
    assert m.shape == (80, 96) and m.dtype == torch.float32 and set(m.unique().tolist()) <= {0.0, 1.0}
    assert torch.equal(m.bool(), segs[segs[:, y, x]].any(0))                       # the union of the masks under the point
    mb = M.fastsam(img, boxes=[[10, 10, 70, 70]], **kw)
    assert any(torch.equal(mb.bool(), s) for s in segs)                            # one proposed mask
    assert torch.equal(mb.bool(), segs[M.select_masks(segs, boxes=[[10, 10, 70, 70]])].any(0))
    seen = {}
    def scorer(images, texts):
        seen["n"], seen["texts"] = len(images), texts
        assert all(isinstance(i, Image.Image) and i.mode == "RGB" for i in images)
        return torch.arange(len(images), dtype=torch.float32)[None].repeat(len(texts), 1)   # prefers the last crop
    mt = M.fastsam(img, text="a red disk", text_scorer=scorer, **kw)
    crops, keep = M.mask_crops(img, segs, boxes)
    assert seen["texts"] == ["a red disk"] and seen["n"] == len(keep) > 0
    assert torch.equal(mt.bool(), segs[keep[-1]])
    tensor_img = torch.from_numpy(np.asarray(img, np.float32) / 127.5 - 1).permute(2, 0, 1)[None]
    assert torch.equal(M.fastsam(tensor_img, points=[[x, y]], **kw), m)          # a [1,3,H,W] tensor in [-1, 1]


def test_fastsam_selection_on_a_known_stack(monkeypatch):
    "fastsam's own plumbing (prompts -> selection -> union, text crops -> scorer) on a known mask stack."
    s = scene_stack()
    boxes = torch.tensor([[10, 10, 50, 50], [20, 20, 30, 30], [60, 5, 65, 55], [42, 37, 59, 54]], dtype=torch.float32)
    monkeypatch.setattr(M, "fastsam_segments", lambda *a, **k: (s, boxes, torch.full((4,), 0.9)))
    img = Image.new("RGB", (80, 60), (0, 0, 0))
    ImageDraw.Draw(img).rectangle([60, 5, 64, 54], fill=(255, 0, 0))       # the bar (mask 2) is red
    assert torch.equal(M.fastsam(img, points=[[25, 25]]), (s[0] | s[1]).float())
    assert torch.equal(M.fastsam(img, points=[[25, 25], [15, 15]], labels=[1, 0]), s[1].float())
    assert torch.equal(M.fastsam(img, boxes=[[19, 19, 31, 31]]), s[1].float())
    redness = lambda ims, texts: torch.tensor([[float(np.asarray(i)[..., 0].mean()) for i in ims]] * len(texts))
    assert torch.equal(M.fastsam(img, text="the red bar", text_scorer=redness), s[2].float())
    # mask 1 has exactly 100 pixels: too small to be scored against text, as in ultralytics
    assert M.mask_crops(img, s, boxes)[1] == [0, 2, 3]
    with pytest.warns(UserWarning, match="select none"):
        m = M.fastsam(img, points=[[2, 2]])
    assert m.shape == (60, 80) and m.sum() == 0


def test_fastsam_finds_nothing_warns(random_ckpt):
    img = Image.new("RGB", (96, 80), (120, 130, 140))
    with pytest.warns(UserWarning, match="no object"):          # conf above every score: FastSAM finds nothing
        m = M.fastsam(img, points=[[1, 1]], checkpoint=random_ckpt, device="cpu", imgsz=128, conf=0.99)
    assert m.shape == (80, 96) and m.sum() == 0


def test_fastsam_input_errors(random_ckpt, tmp_path):
    img = Image.new("RGB", (96, 80))
    kw = dict(checkpoint=random_ckpt, device="cpu", imgsz=128)
    with pytest.raises(InputError, match="needs a prompt"): M.fastsam(img, **kw)
    with pytest.raises(InputError, match="labels were given"): M.fastsam(img, labels=[1], **kw)
    with pytest.raises(InputError, match="outside"): M.fastsam(img, points=[[96, 0]], **kw)
    with pytest.raises(InputError, match="text="): M.fastsam(img, text=["", "x"], text_scorer=lambda i, t: None, **kw)
    with pytest.raises(InputError, match="text_scorer returned"):
        M.fastsam(img, text="x", text_scorer=lambda i, t: torch.zeros(5, 5), **kw)
    with pytest.raises(InputError, match="imgsz"): M.fastsam(img, points=[[1, 1]], checkpoint=random_ckpt, imgsz=8)
    with pytest.raises(InputError, match="conf"): M.fastsam(img, points=[[1, 1]], checkpoint=random_ckpt, conf=2)
    with pytest.raises(InputError, match="image tensor"): M.fastsam(torch.zeros(1, 4, 8, 8), points=[[1, 1]], **kw)


def test_missing_checkpoint_says_where_to_download(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setattr(M, "_weights_dirs", lambda: [tmp_path, tmp_path / ".cache" / "diffstyler"])
    img = Image.new("RGB", (32, 32))
    for ck in (None, "FastSAM-s.pt", tmp_path / "missing.pt"):
        with pytest.raises(InputError) as e:
            M.fastsam(img, points=[[1, 1]], checkpoint=ck)
        msg = str(e.value)
        assert "FastSAM-s.pt" in msg and "FastSAM-x.pt" in msg and "checkpoint=" in msg and "\n" not in msg
    with pytest.raises(InputError, match="is a folder"): M.find_fastsam_checkpoint(tmp_path)
    (tmp_path / ".cache" / "diffstyler").mkdir(parents=True)
    (tmp_path / ".cache" / "diffstyler" / "FastSAM-x.pt").write_bytes(b"x")
    assert M.find_fastsam_checkpoint() == tmp_path / ".cache" / "diffstyler" / "FastSAM-x.pt"   # found locally
    assert M.find_fastsam_checkpoint("FastSAM-x.pt") == tmp_path / ".cache" / "diffstyler" / "FastSAM-x.pt"


def test_unloadable_or_wrong_task_checkpoint(tmp_path):
    pytest.importorskip("ultralytics")
    from ultralytics.nn.tasks import DetectionModel
    img = Image.new("RGB", (32, 32))
    bad = tmp_path / "junk.pt"; bad.write_bytes(b"not a checkpoint" * 100)
    with pytest.raises(InputError, match="cannot be loaded as FastSAM"):
        M.fastsam(img, points=[[1, 1]], checkpoint=bad, device="cpu", imgsz=64)
    det = tmp_path / "det.pt"
    torch.save({"model": DetectionModel("yolov8n.yaml", nc=1, verbose=False), "train_args": {"task": "detect"}}, det)
    with pytest.raises(InputError, match="not a segmentation model"):
        M.fastsam(img, points=[[1, 1]], checkpoint=det, device="cpu", imgsz=64)


def test_text_prompt_without_clip_says_what_to_install(random_ckpt, monkeypatch):
    monkeypatch.setitem(sys.modules, "clip", None)              # import clip -> ImportError
    with pytest.raises(InputError, match="pip install") as e:
        M.fastsam(Image.new("RGB", (32, 32)), text="a deer", checkpoint=random_ckpt, device="cpu", imgsz=64)
    assert "text_scorer" in str(e.value) and "ViT-B-32.pt" in str(e.value)


def test_text_prompt_without_clip_weights_says_what_to_download(random_ckpt, monkeypatch, tmp_path):
    fake = types.ModuleType("clip"); fake._MODELS = {"ViT-B/32": "https://example.invalid/ViT-B-32.pt"}
    def no_load(*a, **k): raise AssertionError("must not try to load (or download) CLIP")
    fake.load = no_load
    monkeypatch.setitem(sys.modules, "clip", fake)
    monkeypatch.setenv("HOME", str(tmp_path))
    import ultralytics.utils
    monkeypatch.setattr(ultralytics.utils, "WEIGHTS_DIR", tmp_path / "weights")
    with pytest.raises(InputError, match="https://example.invalid/ViT-B-32.pt") as e:
        M.fastsam(Image.new("RGB", (32, 32)), text="a deer", checkpoint=random_ckpt, device="cpu", imgsz=64)
    assert "not found" in str(e.value) and "text_scorer" in str(e.value)
