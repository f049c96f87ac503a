"""The toy world: dataset determinism, masks, metrics on constructed cases, and the shipped pipeline (offline)."""
import importlib, json, math, os, subprocess, sys, time
from pathlib import Path
import numpy as np
import pytest
import torch
from PIL import Image

from diffstyler import toy
from diffstyler.core import InputError, ModelNotAvailableError
from diffstyler.models import ddim_scheduler


def test_dataset_is_deterministic_and_seeded():
    a, b = toy.ToyShapes(3)[17], toy.ToyShapes(3)[17]
    assert (a["image"] == b["image"]).all() and a["caption"] == b["caption"]
    assert (toy.ToyShapes(4)[17]["image"] != a["image"]).any()
    # items are independent of the order they are read in
    ds = toy.ToyShapes(3)
    later = ds[40]["caption"]
    assert toy.ToyShapes(3)[40]["caption"] == later


def test_held_out_styles_stay_out_of_the_base_dataset():
    assert set(toy.HELD_OUT_STYLES) and not set(toy.HELD_OUT_STYLES) & set(toy.TRAIN_STYLES)
    styles = {toy.ToyShapes(0)[i]["meta"]["style"] for i in range(300)}
    assert styles == set(toy.TRAIN_STYLES)
    styles = {toy.ToyShapes(0, styles=toy.STYLES)[i]["meta"]["style"] for i in range(300)}
    assert styles == set(toy.STYLES)


def test_captions_name_what_is_drawn():
    for i in range(30):
        it = toy.ToyShapes(1)[i]
        m = it["meta"]
        for shape, colour in m["shapes"]:
            assert f"{colour} {shape}" in it["caption"]
        assert f"on {m['background']} background" in it["caption"] and f"{m['style']} style" in it["caption"]


def test_masks_match_pixels():
    img, cap, masks = toy.render_scene([("square", "blue"), ("circle", "yellow")], "black", "flat",
                                       centers=[(18, 18), (46, 46)], radii=[10, 10])
    a = np.asarray(img)
    assert masks.shape == (2, 64, 64) and masks.dtype == bool
    assert (a[masks[0]] == toy.COLORS["blue"]).all(1).mean() > 0.75          # the rest are anti-aliased edges
    assert np.abs(a[masks[0]].astype(int) - toy.COLORS["blue"]).mean() < 25
    assert np.abs(a[masks[1]].astype(int) - toy.COLORS["yellow"]).mean() < 25
    assert (a[~masks.any(0)] == toy.BACKGROUNDS["black"]).all(1).mean() > 0.95
    # a later object hides an earlier one: visible masks never overlap
    img, _, masks = toy.render_scene([("square", "red"), ("circle", "green")], "white", "flat",
                                     centers=[(32, 32), (36, 32)], radii=[12, 12])
    assert not (masks[0] & masks[1]).any() and masks[0].sum() > 0


def test_textures_repeat_with_the_vae_patch_grid():
    # every texture is anchored to the 4x4 patches of the VAE: a fixed offset per latent pixel, one look per style word
    for style in ("checker", "grid", "stripes", "dots"):
        t = toy.world._texture(style, 64)
        assert np.array_equal(t, np.roll(t, 4, axis=1)) and np.array_equal(t, np.roll(t, 4, axis=0)), style
        assert 0.2 < t.mean() < 0.6, style
    a = np.asarray(toy.render_scene([("circle", "red")], "gray", "stripes", centers=[(44, 32)], radii=8)[0])
    b = np.asarray(toy.render_scene([("circle", "red")], "gray", "stripes", centers=[(20, 32)], radii=8)[0])
    # the texture does not move with the objects: away from both circles (x < 12, x >= 52) the pixels agree
    assert (a[:, :10] == b[:, :10]).all() and (a[:, 54:] == b[:, 54:]).all() and (a != b).any()


def test_one_layout_in_every_style_keeps_its_masks_and_redraws_the_scene():
    imgs, caps, lays = toy.render_set(11, 4, toy.STYLES)
    assert imgs.shape == (24, 64, 64, 3) and len(caps) == 24
    for k, lay in enumerate(lays):
        masks = [toy.render_layout(lay, s)[1] for s in toy.STYLES]
        assert all(np.array_equal(m, masks[0]) for m in masks)
        flat = imgs[6 * k].astype(int)
        for j, s in enumerate(toy.STYLES[1:], 1):
            assert caps[6 * k + j] == toy.layout_caption(lay, s) and caps[6 * k + j].startswith(f"{s} style, ")
            changed = (imgs[6 * k + j].astype(int) != flat).any(-1)
            if s == "outline": assert changed[masks[0].any(0)].mean() > 0.9, s   # line work and palette: every object pixel
            else: assert changed.mean() > 0.2, s                               # a texture redraws the whole scene


def test_bad_inputs_raise_input_error():
    with pytest.raises(InputError, match="shape"): toy.render_scene([("hexagon", "red")])
    with pytest.raises(InputError, match="background"): toy.render_scene([("circle", "red")], background="pink")
    with pytest.raises(InputError, match="style"): toy.ToyShapes(0, styles=("oil",))


def test_content_iou():
    img, _, masks = toy.render_scene([("star", "red")], "gray", "checker", seed=5)
    assert toy.content_iou(img, masks) > 0.9
    assert toy.content_iou(img, torch.from_numpy(masks[0])) > 0.9        # a tensor mask
    moved, _, _ = toy.render_scene([("star", "red")], "gray", "checker", seed=6)
    assert toy.content_iou(moved, masks) < 0.5
    assert toy.content_iou(Image.new("RGB", (64, 64), toy.BACKGROUNDS["white"]), masks) == 0.0
    assert toy.content_iou(img, img) == 1.0


def test_style_distance_ranks_styles():
    ref = toy.render_scene([("circle", "red")], "white", "stripes", seed=0)[0]
    same = toy.render_scene([("square", "blue")], "white", "stripes", seed=1)[0]
    for other in ("flat", "checker", "dots"):
        o = toy.render_scene([("square", "blue")], "white", other, seed=1)[0]
        assert toy.style_distance(same, ref) < toy.style_distance(o, ref), other
    assert toy.style_distance(ref, ref) == pytest.approx(0.0, abs=1e-9)


def test_outside_mask_change():
    a = np.zeros((64, 64, 3), np.uint8); b = a.copy(); b[20:40, 20:40] = 255
    m = np.zeros((64, 64), bool); m[20:40, 20:40] = True
    assert toy.outside_mask_change(a, b, m) == 0.0
    assert toy.outside_mask_change(a, b, np.zeros((16, 16))) == pytest.approx(400 / 4096)
    assert toy.psnr(a, a) == math.inf


def test_readers_recover_rendered_scenes():
    k = 0
    for s in toy.SHAPES:
        for c in toy.COLORS:
            for b in toy.BACKGROUNDS:
                im, _, _ = toy.render_scene([(s, c)], b, toy.STYLES[k % len(toy.STYLES)], seed=k); k += 1
                assert toy.classify_shape(toy.object_mask(im)) == s
                assert toy.classify_colour(im) == c and toy.classify_background(im) == b


def test_every_caption_word_is_one_token():
    tok = toy.toy_tokenizer()
    for w in toy.TOY_WORDS:
        assert len(tok(w).input_ids) == 3, w


def test_missing_weights_give_a_clear_error(tmp_path):
    with pytest.raises(ModelNotAvailableError, match="toy model weights"):
        toy.load_toy_pipeline(tmp_path)


def test_shipped_pipeline_loads_offline_with_sd21_topology(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    size = sum(f.stat().st_size for f in toy.TOY_DIR.rglob("*") if f.is_file())
    assert size <= 25e6
    t0 = time.time(); pipe = toy.load_toy_pipeline(); assert time.time() - t0 < 30
    unet = pipe.unet
    assert tuple(unet.config.up_block_types) == ("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3
    assert tuple(unet.config.down_block_types) == ("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",)
    assert not hasattr(unet.up_blocks[0], "attentions")
    assert [len(b.resnets) for b in unet.up_blocks] == [3, 3, 3, 3]
    assert [len(b.attentions) for b in unet.up_blocks[1:]] == [3, 3, 3]
    assert unet.dtype == torch.float32 and pipe.vae.config.latent_channels == unet.config.in_channels == unet.config.out_channels
    assert pipe.scheduler.config.prediction_type == "v_prediction" and pipe.scheduler.alphas_cumprod[-1] == 0  # shifted, zero terminal SNR
    # a short generation runs and gives a 64-px picture
    pipe.scheduler = ddim_scheduler(pipe.scheduler.config)
    im = pipe("flat style, a red circle on white background", num_inference_steps=3, guidance_scale=1.0,
              generator=torch.Generator().manual_seed(0)).images[0]
    assert im.size == (64, 64)


def test_load_pipeline_toy_goes_through_models(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from diffstyler.models import load_pipeline
    pipe = load_pipeline("toy", device="cpu")
    assert type(pipe.scheduler).__name__ == "DDIMScheduler"
    assert pipe.unet.config.sample_size * 4 == 64


def test_patch_vae_is_a_fixed_pca_that_keeps_held_out_styles_and_saves(tmp_path):
    vae = toy.toy_vae()
    x, _ = toy.ToyShapes(5, styles=toy.STYLES).batch(0, 12)   # held-out styles too: the PCA was fitted on every style
    post = vae.encode(x).latent_dist
    assert post.mean.shape == (12, 24, 16, 16) and torch.equal(post.sample(), post.mean)
    assert toy.psnr(vae.decode(post.mean).sample[0], x[0]) > 33
    basis = vae.basis.double()
    assert torch.allclose(basis @ basis.T, torch.eye(24, dtype=torch.float64), atol=1e-5)   # orthonormal axes
    z = vae.encode(toy.ToyShapes(1).batch(0, 256)[0]).latent_dist.mean
    assert abs(float((z * vae.config.scaling_factor).std()) - 1) < 0.1    # scaled latents have unit variance, as SD's
    shipped = toy.load_toy_pipeline().vae                                 # the shipped VAE is this fit
    assert torch.allclose(shipped.basis.abs(), vae.basis.abs(), atol=1e-4) and shipped.config.scaling_factor == vae.config.scaling_factor
    vae.save_pretrained(tmp_path / "vae")
    back = toy.PatchVAE.from_pretrained(tmp_path / "vae")
    assert torch.equal(back.basis, vae.basis) and torch.equal(back.mean, vae.mean)
    assert back.config.scaling_factor == vae.config.scaling_factor
    assert tuple(back.config.block_out_channels) == (24, 24, 24) and back.config.latent_channels == 24
    lossless = toy.PatchVAE(latent_channels=48)                           # identity basis: space-to-depth
    assert (lossless.decode(lossless.encode(x).latent_dist.mean).sample - x).abs().max() < 1e-6
    with pytest.raises(InputError, match="power of two"):
        toy.PatchVAE(patch_size=3)
    with pytest.raises(InputError, match="latent_channels"):
        toy.PatchVAE(latent_channels=0)


def test_a_toy_folder_loads_through_load_pipeline_and_plain_diffusers(tmp_path):
    from diffusers import StableDiffusionPipeline
    from diffstyler.models import load_pipeline, vae_scale
    toy.save_toy_pipeline(toy.build_toy_pipeline(), tmp_path / "m")
    pipe = load_pipeline(str(tmp_path / "m"), device="cpu")
    assert isinstance(pipe.vae, toy.PatchVAE) and pipe.unet.dtype == torch.float32 and vae_scale(pipe) == 4
    index = json.loads((tmp_path / "m" / "model_index.json").read_text())
    assert index["vae"] == ["diffstyler.toy", "PatchVAE"]         # the public path, not the part that defines it
    plain = StableDiffusionPipeline.from_pretrained(str(tmp_path / "m"))
    assert isinstance(plain.vae, toy.PatchVAE) and plain.vae_scale_factor == 4
    # folders saved before the toy world became a package, or from a notebook, name another module: they still load
    for library in ("diffstyler.toy", "diffstyler.toy.model", "__main__"):
        index["vae"] = [library, "PatchVAE"]
        (tmp_path / "m" / "model_index.json").write_text(json.dumps(index))
        assert isinstance(load_pipeline(str(tmp_path / "m"), device="cpu").vae, toy.PatchVAE), library
        assert isinstance(toy.load_toy_pipeline(tmp_path / "m").vae, toy.PatchVAE), library


def test_toy_eval_measures_every_bar_prints_the_table_and_leaves_the_pipeline_as_it_was(tmp_path, capsys):
    from diffstyler.lora import adapter_names
    pipe = toy.build_toy_pipeline()     # untrained: the numbers mean nothing, the bookkeeping is checked
    r = toy.toy_eval(pipe, contents=1, n=2, steps=4, inversion_steps=4, fixed_point_iters=0, n_inversion=1, lora=dict(steps=2),
                     out=tmp_path / "e.json")
    saved = json.loads((tmp_path / "e.json").read_text())
    assert set(saved["bars"]) == set(toy.BARS) and set(toy.STYLE_BARS) < set(toy.BARS)     # every bar measured
    for k, b in saved["bars"].items():
        op, target = toy.BARS[k]
        assert (b["op"], b["target"], b["measured"]) == (op, target, saved[k])
        assert b["passed"] == (saved[k] <= target if op == "<=" else saved[k] >= target if op == ">=" else saved[k] == target)
    table = capsys.readouterr().out
    for k, b in saved["bars"].items():          # the printed table: measured / target / PASS|FAIL, one line per bar
        assert f"| {k} | {float(saved[k]):.3f} | {b['op']} {b['target']} | {'PASS' if b['passed'] else 'FAIL'} |" in table, k
    assert saved["n_contents"] == 1 and saved["feature_steps"] == [0, 1, 2, 3, 4] and len(saved["sweep_share"]) == 5
    assert saved["lora"]["steps"] == 2 and saved["lora"]["rank"] == toy.TOY_LORA["rank"] and "images" not in saved
    assert len(r["style_images"]) == 1 and len(r["style_images"][0]) == 3 + 2 * 3 + 2 + 5 and len(r["images"]) == 2
    assert list(adapter_names(pipe.unet)) == []
    with pytest.raises(InputError, match="lora_style"):
        toy.toy_style_eval(pipe, lora_style="flat")


# the toy world is a package of five parts (issue 12); the overview chapter (nbs/08_toy.ipynb) re-exports them all
PARTS = {"world": ("SHAPES", "COLORS", "BACKGROUNDS", "STYLES", "HELD_OUT_STYLES", "TRAIN_STYLES", "TOY_WORDS", "shape_mask",
                   "caption_for", "sample_layout", "render_layout", "layout_caption", "to_tensor", "render_set", "ToyShapes",
                   "render_scene"),
         "metrics": ("object_mask", "content_iou", "colour_histogram", "style_components", "style_distance",
                     "outside_mask_change", "psnr", "classify_shape", "classify_colour", "classify_background",
                     "StyleNet", "STYLE_CLASSIFIER_FILE", "load_style_classifier", "style_probabilities", "classify_style",
                     "texture_scores"),
         "model": ("TOY_DIR", "toy_unet_config", "PatchVAE", "toy_vae", "shifted_scheduler", "toy_tokenizer", "toy_text_encoder",
                   "build_toy_pipeline", "save_toy_pipeline", "load_toy_pipeline"),
         "training": ("train_toy",),
         "evaluation": ("BARS", "STYLE_BARS", "TOY_LORA", "vae_psnr", "ddim_roundtrip", "toy_eval", "toy_style_eval")}


def test_every_name_of_the_single_module_imports_from_the_package():
    for part, names in PARTS.items():
        mod = importlib.import_module(f"diffstyler.toy.{part}")
        assert sorted(mod.__all__) == sorted(names), part          # each part holds what the overview says
        for name in names:
            assert getattr(toy, name) is getattr(mod, name), name  # `from diffstyler.toy import X` is the part's X
    assert sorted(toy.__all__) == sorted(n for names in PARTS.values() for n in names)
    ns = {}
    exec("from diffstyler.toy import *", ns)
    assert {n for names in PARTS.values() for n in names} <= set(ns)
    # private helpers that scripts and tests reach through the package
    from diffstyler.toy import _main, _texture, _to_array
    assert _texture is toy.world._texture and _to_array is toy.metrics._to_array


def test_each_part_is_short():
    for part in PARTS:
        lines = Path(importlib.import_module(f"diffstyler.toy.{part}").__file__).read_text().count("\n")
        assert lines < 250, (part, lines)   # a chapter a reader can take in at once (the single module was 669 lines)


def test_python_dash_m_and_the_training_script_still_work():
    r = subprocess.run([sys.executable, "-m", "diffstyler.toy", "eval", "--help"], capture_output=True, text=True)
    assert r.returncode == 0 and "--contents" in r.stdout and "--model" in r.stdout, r.stderr
    script = Path(__file__).resolve().parent.parent / "scripts" / "train_toy.py"
    r = subprocess.run([sys.executable, str(script), "--help"], capture_output=True, text=True)
    assert r.returncode == 0 and "--skip-dropout" in r.stdout and "--resume" in r.stdout, r.stderr


TINY_UNET = dict(widths=(8, 8, 8, 8), heads=(1, 1, 1, 1))


def test_a_short_training_run_writes_a_loadable_folder_and_its_log(tmp_path):
    # the recipe end to end in seconds: a tiny UNet, a pool of 4 layouts, 3 steps (the shipped phases had 20-100 minutes)
    out = toy.train_toy(tmp_path / "run", minutes=1, max_steps=3, pool=4, layouts=1, log_every=1, echo=False,
                        unet_config=toy.toy_unet_config(**TINY_UNET))
    assert out == tmp_path / "run" / "ema"
    log = [json.loads(l) for l in (out / "train_log.jsonl").read_text().splitlines()]
    assert [r["event"] for r in log if "event" in r] == ["start", "final", "phase-summary"]
    assert [r["step"] for r in log if "loss" in r] == [1, 2, 3] and all(math.isfinite(r["loss"]) for r in log if "loss" in r)
    assert log[-1]["steps"] == 3 and log[-1]["where"] == "cpu" and log[-1]["batch"] == len(toy.TRAIN_STYLES)
    assert json.loads((out / "model_index.json").read_text())["vae"] == ["diffstyler.toy", "PatchVAE"]
    pipe = toy.load_toy_pipeline(out)
    assert isinstance(pipe.vae, toy.PatchVAE) and pipe.scheduler.config.prediction_type == "v_prediction"
    assert float(pipe.scheduler.alphas_cumprod[-1]) == pytest.approx(0, abs=1e-6)        # shifted, zero terminal SNR
    with pytest.raises(InputError, match="resume"):
        toy.train_toy(tmp_path / "run", max_steps=3, pool=4, layouts=1, unet_config=toy.toy_unet_config(**TINY_UNET))
    with pytest.raises(InputError, match="prediction_type"):
        toy.train_toy(tmp_path / "other", prediction_type="x0")


def test_training_resumes_where_it_stopped_bit_for_bit(tmp_path):
    "A run killed after its step-2 checkpoint and resumed ends with the weights of an uninterrupted run."
    kw = dict(minutes=5, max_steps=4, pool=4, layouts=1, echo=False, snapshots=False, ckpt_minutes=0,
              unet_config=toy.toy_unet_config(**TINY_UNET))
    toy.train_toy(tmp_path / "a", **kw)
    code = ("import sys, os; from diffstyler.toy import training as T\n"
            "w = T._Log.__call__\n"
            "def crash(self, **k):\n"
            "    w(self, **k)\n"
            "    if k.get('event') == 'checkpoint' and k['step'] == 2: os._exit(9)\n"
            "T._Log.__call__ = crash\n"
            f"T.train_toy(sys.argv[1], **{kw!r})")
    r = subprocess.run([sys.executable, "-c", code, str(tmp_path / "b")], capture_output=True, text=True,
                       env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert r.returncode == 9, r.stderr[-2000:]          # died mid-run: state.pt of step 2, no final pipeline
    assert torch.load(tmp_path / "b" / "state.pt", weights_only=False)["step"] == 2
    toy.train_toy(tmp_path / "b", resume=True, **kw)
    a, b = (torch.load(tmp_path / n / "state.pt", weights_only=False) for n in ("a", "b"))
    assert b["step"] == 4 and all(torch.equal(a["ema"][k], b["ema"][k]) for k in a["ema"])
    events = [json.loads(l).get("event") for l in (tmp_path / "b" / "log.jsonl").read_text().splitlines()]
    assert [e for e in events if e] == ["start", "checkpoint", "checkpoint", "resume", "start", "checkpoint", "final", "phase-summary"]


def test_the_shipped_folder_loads_with_plain_diffusers():
    "model_index.json names PatchVAE by its public path (it named `__main__`, from the `python -m` save, which failed)."
    from diffusers import StableDiffusionPipeline
    assert json.loads((toy.TOY_DIR / "model_index.json").read_text())["vae"] == ["diffstyler.toy", "PatchVAE"]
    pipe = StableDiffusionPipeline.from_pretrained(str(toy.TOY_DIR), local_files_only=True)
    assert isinstance(pipe.vae, toy.PatchVAE)


def test_plain_diffusers_in_a_fresh_process_needs_only_import_diffstyler_toy():
    "What chapter 08c tells a reader: diffusers finds the module a folder names in sys.modules, so import it first."
    code = ("import diffstyler.toy\nfrom diffusers import StableDiffusionPipeline\n"
            f"p = StableDiffusionPipeline.from_pretrained({str(toy.TOY_DIR)!r}, local_files_only=True)\n"
            "print(type(p.vae).__name__, p.vae_scale_factor)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.split()[-2:] == ["PatchVAE", "4"], r.stderr[-2000:]
