"""The `diffstyler` command: bad inputs refused with one line and exit code 2 (nothing changed), outputs written with
their configs, interrupted training leaves no partial file and resumes, YAML batches, the demo (tiny model)."""
import hashlib, io, json, os, signal, struct, subprocess, sys, time, zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open
from safetensors.torch import save_file

from diffstyler.cli import main
from diffstyler.lora import WEIGHT_NAME, STATE_NAME
from diffstyler.toy import render_scene

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--model", "tiny", "--quiet"]
FAST = ["--steps", "5", "--inversion-steps", "10"]


def call(capsys, *argv):
    "Run main in-process; return (exit code, stdout, stderr)."
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def huge_png(path, w, h):
    "A PNG whose header claims w x h pixels (PIL reads the size without decoding anything)."
    buf = io.BytesIO(); Image.new("L", (1, 1)).save(buf, "PNG"); b = bytearray(buf.getvalue())
    b[16:20], b[20:24] = struct.pack(">I", w), struct.pack(">I", h)
    b[29:33] = struct.pack(">I", zlib.crc32(bytes(b[12:29])) & 0xFFFFFFFF)
    path.write_bytes(bytes(b))


def snapshot(folder):
    return {str(p.relative_to(folder)): hashlib.sha1(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    "A workspace of good and bad inputs, a tiny LoRA and a tiny source trajectory (made with the CLI itself)."
    w = tmp_path_factory.mktemp("cli")
    content, _, obj = render_scene([("circle", "red"), ("square", "blue")], "white", "flat", seed=1)
    content.save(w/"content.png")
    render_scene([("star", "yellow")], "black", "stripes", seed=2)[0].save(w/"style.png")
    Image.fromarray(obj[0].astype(np.uint8) * 255).save(w/"circle.png")
    Image.fromarray(obj[1].astype(np.uint8) * 255).save(w/"square.png")
    big = np.zeros((128, 96), np.uint8); big[10:100, 5:80] = 255          # another size and aspect, overlaps the circle
    Image.fromarray(big).save(w/"big_mask.png")
    Image.fromarray(np.zeros((64, 64), np.uint8)).save(w/"zero_mask.png")
    (w/"notimage.png").write_text("this is not an image\n")
    good = (w/"content.png").read_bytes(); (w/"truncated.png").write_bytes(good[: len(good) // 2])
    (w/"empty.png").write_bytes(b"")
    huge_png(w/"huge.png", 9000, 9000)
    huge_png(w/"zero.png", 0, 0)
    (w/"folder_img").mkdir()
    (w/"taken.png").write_bytes(b"precious")
    (w/"taken.safetensors").write_bytes(b"precious")
    # a LoRA and a source trajectory, through the CLI
    code = main(["train-lora", w/"style.png", "--prompt", "stripes style, a yellow star", "--out", w/"lora", "--steps", "2",
                 "--checkpoint-every", "0", *TINY])
    assert code == 0
    assert main(["invert", w/"content.png", "--out", w/"src.safetensors", *FAST, *TINY]) == 0
    # LoRA look-alikes
    (w/"lora_empty").mkdir()
    torch.save({"unet.x.lora.down.weight": torch.zeros(2, 2)}, w/"lora.bin")
    (w/"lora_pickledir").mkdir(); torch.save({"a": torch.zeros(1)}, w/"lora_pickledir"/"adapter.pt")
    (w/"damaged.safetensors").write_text("not safetensors at all")
    with safe_open(str(w/"lora"/WEIGHT_NAME), "pt") as f:
        meta = f.metadata(); sd = {k: f.get_tensor(k) for k in f.keys()}
    wide = {k: (torch.cat([v, v], 1) if ("lora_A" in k or "lora.down" in k) else v) for k, v in sd.items()}
    (w/"lora_wide").mkdir(); save_file(wide, str(w/"lora_wide"/WEIGHT_NAME), metadata=meta)
    # YAML files
    (w/"bad.yaml").write_text("image_path: content.png\n  lora_name: [unclosed\n")
    (w/"unknown.yaml").write_text("image_path: content.png\nlora_name: lora\noutput_path: o.png\ncolour_boost: 3\n")
    (w/"fraction.yaml").write_text("image_path: content.png\nlora_name: lora\noutput_path: o.png\npnp_f_t: 1.5\n")
    (w/"zero_steps.yaml").write_text("image_path: content.png\nlora_name: lora\noutput_path: o.png\nn_timesteps: 0\n")
    (w/"dup.yaml").write_text("- {image_path: content.png, lora_name: lora, output_path: dup.png}\n"
                              "- {image_path: content.png, lora_name: lora, output_path: dup.png}\n")
    return w


@pytest.fixture(scope="module")
def ro_dir(ws):
    "A folder no file can be created in. As root a chmod-ed folder is still writable, so use a read-only system folder then."
    d = ws/"readonly"; d.mkdir(exist_ok=True); d.chmod(0o555)
    for cand in (d, Path("/sys"), Path("/proc")):
        try:
            p = cand/".probe"; p.write_bytes(b""); p.unlink()
        except OSError: return cand
    pytest.skip("no folder on this machine refuses writes (running as root, no read-only mount)")


T = lambda w, *a: ["transfer", w/"src.safetensors", "--lora", w/"lora", *a, *TINY, "--out", w/"out.png"]
TC = lambda w, *a: ["transfer", w/"content.png", "--lora", w/"lora", *a, *TINY, *FAST, "--out", w/"out.png"]
TL = lambda w, *a: ["train-lora", *a, "--prompt", "p", *TINY]
I = lambda w, *a: ["invert", *a, *TINY]

BAD = {  # id: (argv builder, what the message must name)
    "missing content": (lambda w: I(w, w/"missing.png", "--out", w/"x.safetensors"), "missing.png"),
    "non-image style": (lambda w: TL(w, w/"notimage.png", "--out", w/"l1"), "notimage.png"),
    "truncated style": (lambda w: TL(w, w/"truncated.png", "--out", w/"l1"), "truncated.png"),
    "empty style file": (lambda w: TL(w, w/"empty.png", "--out", w/"l1"), "empty.png"),
    "huge image": (lambda w: I(w, w/"huge.png", "--out", w/"x.safetensors"), "huge.png"),
    "zero-size image": (lambda w: I(w, w/"zero.png", "--out", w/"x.safetensors"), "zero.png"),
    "folder as image (unreadable)": (lambda w: ["transfer", w/"folder_img", "--lora", w/"lora", *TINY, *FAST, "--out", w/"out.png"], "folder_img"),
    "train steps 0": (lambda w: TL(w, w/"style.png", "--out", w/"l1", "--steps", "0"), "--steps"),
    "train steps negative": (lambda w: TL(w, w/"style.png", "--out", w/"l1", "--steps", "-3"), "--steps"),
    "train rank 0": (lambda w: TL(w, w/"style.png", "--out", w/"l1", "--rank", "0"), "--rank"),
    "train out in missing folder": (lambda w: TL(w, w/"style.png", "--out", w/"nowhere"/"l1"), "nowhere"),
    "train out holds weights": (lambda w: TL(w, w/"style.png", "--out", w/"lora"), lambda w: str(w/"lora")),
    "invert steps 0": (lambda w: I(w, w/"content.png", "--out", w/"x.safetensors", "--steps", "0"), "--steps"),
    "invert inversion steps negative": (lambda w: I(w, w/"content.png", "--out", w/"x.safetensors", "--inversion-steps", "-5"), "--inversion-steps"),
    "1000 sampling steps (timestep 1000 does not exist)": (lambda w: I(w, w/"content.png", "--out", w/"x.safetensors", "--steps", "1000"), "--steps=1000"),
    "invert out in missing folder": (lambda w: I(w, w/"content.png", "--out", w/"nowhere"/"x.safetensors"), "nowhere"),
    "invert out exists": (lambda w: I(w, w/"content.png", "--out", w/"taken.safetensors"), "taken.safetensors"),
    "invert out wrong suffix": (lambda w: I(w, w/"content.png", "--out", w/"x.png"), "x.png"),
    "model path missing": (lambda w: ["invert", w/"content.png", "--out", w/"x.safetensors", "--model", "./no-such-model-dir", "--quiet"], "no-such-model-dir"),
    "model not available offline": (lambda w: ["invert", w/"content.png", "--out", w/"x.safetensors", *FAST, "--model", "someone/not-cached-model", "--quiet"], "someone/not-cached-model"),
    "lora folder without weights": (lambda w: ["transfer", w/"src.safetensors", "--lora", w/"lora_empty", *TINY, "--out", w/"out.png"], "lora_empty"),
    "lora pickle file": (lambda w: ["transfer", w/"src.safetensors", "--lora", w/"lora.bin", *TINY, "--out", w/"out.png"], "lora.bin"),
    "lora folder of pickles": (lambda w: ["transfer", w/"src.safetensors", "--lora", w/"lora_pickledir", *TINY, "--out", w/"out.png"], "lora_pickledir"),
    "lora damaged safetensors": (lambda w: ["transfer", w/"src.safetensors", "--lora", w/"damaged.safetensors", *TINY, "--out", w/"out.png"], "damaged.safetensors"),
    "lora missing": (lambda w: ["transfer", w/"src.safetensors", "--lora", w/"no_such_lora", *TINY, "--out", w/"out.png"], "no_such_lora"),
    "lora for another base model": (lambda w: ["transfer", w/"src.safetensors", "--lora", w/"lora_wide", *TINY, "--out", w/"out.png"], "lora_wide"),
    "feature steps above steps": (lambda w: T(w, "--feature-steps", "6"), "--feature-steps"),
    "attention steps negative": (lambda w: T(w, "--attention-steps", "-1"), "--attention-steps"),
    "transfer steps 0": (lambda w: ["transfer", w/"content.png", "--lora", w/"lora", *TINY, "--steps", "0", "--out", w/"out.png"], "--steps"),
    "steps differ from trajectory": (lambda w: T(w, "--steps", "10"), "--steps"),
    "more masks than loras": (lambda w: T(w, "--mask", w/"circle.png", "--mask", w/"square.png"), "--mask"),
    "more loras than masks": (lambda w: T(w, "--lora", w/"lora", "--lora", w/"lora", "--mask", w/"circle.png"), "--mask"),
    "several loras, no mask": (lambda w: T(w, "--lora", w/"lora"), "--mask"),
    "mask missing": (lambda w: T(w, "--mask", w/"nomask.png"), "nomask.png"),
    "mask not an image": (lambda w: T(w, "--mask", w/"notimage.png"), "notimage.png"),
    "mask prompt without FastSAM weights": (lambda w: TC(w, "--mask", "the red circle"), "the red circle"),
    "prompt count": (lambda w: T(w, "--lora", w/"lora", "--mask", w/"circle.png", "--mask", w/"square.png",
                                 "--prompt", "a", "--prompt", "b", "--prompt", "c"), "--prompt"),
    "guidance out of range": (lambda w: T(w, "--guidance", "100"), "--guidance"),
    "unknown preset": (lambda w: T(w, "--preset", "fancy"), "--preset"),
    "source not a trajectory": (lambda w: ["transfer", w/"lora"/WEIGHT_NAME, "--lora", w/"lora", *TINY, "--out", w/"out.png"], WEIGHT_NAME),
    "transfer out exists": (lambda w: T(w)[:-1] + [w/"taken.png"], "taken.png"),
    "transfer out not an image": (lambda w: T(w)[:-1] + [w/"out.txt"], "out.txt"),
    "run config missing": (lambda w: ["run", w/"nothere.yaml", *TINY], "nothere.yaml"),
    "run config not yaml": (lambda w: ["run", w/"bad.yaml", *TINY], "bad.yaml"),
    "run unknown key": (lambda w: ["run", w/"unknown.yaml", *TINY], "colour_boost"),
    "run fraction outside 0..1": (lambda w: ["run", w/"fraction.yaml", *TINY], "pnp_f_t"),
    "run zero steps": (lambda w: ["run", w/"zero_steps.yaml", *TINY], "n_timesteps"),
    "run two runs, one output": (lambda w: ["run", w/"dup.yaml", *TINY], "dup.png"),
}


def test_table_is_big_enough():
    assert len(BAD) >= 25


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input(case, ws, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    build, names = BAD[case]
    if "FastSAM" in case:
        from diffstyler.masks import find_fastsam_checkpoint
        try: find_fastsam_checkpoint(); pytest.skip("a FastSAM checkpoint is installed here")
        except Exception: pass
    argv = build(ws)
    before = snapshot(ws)
    code, out, err = call(capsys, *argv)
    assert code == 2, (case, code, err)
    if callable(names): names = names(ws)
    assert names in err, (case, err)
    assert "Traceback" not in err and "Traceback" not in out, (case, err)
    assert out == "", (case, out)                     # nothing claimed as written
    assert snapshot(ws) == before, case               # nothing changed, nothing (partial) added
    msg = [l for l in err.splitlines() if "error" in l]
    assert len(msg) == 1, (case, err)                 # one line


def test_read_only_output_folder(ws, ro_dir, capsys):
    before = snapshot(ws)
    code, out, err = call(capsys, "invert", ws/"content.png", "--out", ro_dir/"x.safetensors", *FAST, *TINY)
    assert code == 2 and str(ro_dir) in err and "writable" in err and "Traceback" not in err, err
    assert snapshot(ws) == before


def test_debug_shows_the_traceback(ws, capsys):
    code, _, err = call(capsys, "invert", ws/"missing.png", "--out", ws/"x.safetensors", "--debug", *TINY)
    assert code == 2 and "Traceback" in err and "missing.png" in err


def test_help_for_every_command(capsys):
    for cmd in ("demo", "train-lora", "invert", "transfer", "run", "toy-train", "toy-eval"):
        code, out, _ = call(capsys, cmd, "--help")
        assert code == 0 and "usage: diffstyler " + cmd in out
    code, out, _ = call(capsys, "--version")
    assert code == 0 and "diffstyler" in out


def test_outputs_have_configs(ws):
    for out in (ws/"lora"/WEIGHT_NAME, ws/"src.safetensors"):
        cfg = json.loads(out.with_name(out.stem + ".config.json").read_text())
        import diffstyler
        assert cfg["diffstyler_version"] == diffstyler.__version__ and cfg["model"] == "tiny"
    assert json.loads((ws/"src.config.json").read_text())["n_timesteps"] == 5


def test_masks_resized_empty_and_overlapping_warn_but_work(ws, tmp_path, capsys):
    out = tmp_path/"three.png"
    code, stdout, err = call(capsys, "transfer", ws/"src.safetensors", "--lora", ws/"lora", "--lora", ws/"lora", "--lora", ws/"lora",
                             "--mask", ws/"big_mask.png", "--mask", ws/"circle.png", "--mask", ws/"zero_mask.png", *TINY, "--out", out)
    assert code == 0, err
    assert stdout.strip() == str(out) and out.exists() and (tmp_path/"three.config.json").exists()
    assert "big_mask.png" in err and "resized" in err      # another size: resized, and said so
    assert "zero_mask.png" in err and "all zeros" in err   # empty: a warning, not an error
    assert "overlap" in err                                # overlapping: the documented normalisation, with a warning
    assert "Traceback" not in err


def test_transfer_from_image_and_reuse_of_trajectory(ws, tmp_path, capsys):
    a, b = tmp_path/"a.png", tmp_path/"b.png"
    assert call(capsys, "transfer", ws/"content.png", "--lora", ws/"lora", *TINY, *FAST, "--out", a)[0] == 0
    assert call(capsys, "transfer", ws/"src.safetensors", "--lora", ws/"lora", *TINY, "--out", b)[0] == 0
    # the same inversion settings give the same picture, with or without the saved trajectory
    assert np.abs(np.asarray(Image.open(a), np.int16) - np.asarray(Image.open(b), np.int16)).max() <= 1
    cfg = json.loads((tmp_path/"a.config.json").read_text())
    assert (cfg["n_timesteps"], cfg["inversion_steps"], cfg["feature_steps"], cfg["attention_steps"]) == (5, 10, 3, 2)
    before = (a.read_bytes(), (tmp_path/"a.config.json").read_bytes())
    code, _, err = call(capsys, "transfer", ws/"content.png", "--lora", ws/"lora", *TINY, *FAST, "--out", a)
    assert code == 2 and "already exists" in err and (a.read_bytes(), (tmp_path/"a.config.json").read_bytes()) == before


def test_run_two_runs_from_yaml(ws, tmp_path, capsys):
    y = tmp_path/"batch.yaml"
    y.write_text(f"""\
runs:
  - {{image_path: {ws/'content.png'}, lora_name: {ws/'lora'}, output_path: first.png}}
  - {{image_path: {ws/'content.png'}, lora_name: {ws/'lora'}, mask: {ws/'circle'}, output_path: second.png,
      pnp_f_t: 0.8, pnp_attn_t: 0.4, prompt_gene: 'stripes style, a red circle', preset: paper}}
n_timesteps: 5
inversion_steps: 10
guidance_scale: 7.5
negative_prompt: ugly, blurry
""")
    code, out, err = call(capsys, "run", y, *TINY)
    assert code == 0, err
    assert out.split() == [str(tmp_path/"first.png"), str(tmp_path/"second.png")]
    for name in ("first", "second"):
        assert (tmp_path/f"{name}.png").exists()
        cfg = json.loads((tmp_path/f"{name}.config.json").read_text())
        assert cfg["n_timesteps"] == 5 and cfg["negative_prompt"] == "ugly, blurry" and "diffstyler_version" in cfg
    cfg = json.loads((tmp_path/"second.config.json").read_text())
    assert (cfg["feature_steps"], cfg["attention_steps"]) == (4, 2) and cfg["mask"] == [str(ws/"circle.png")]
    assert cfg["prompt_gene"] == ["stripes style, a red circle"]


def test_demo_on_tiny(tmp_path, capsys):
    d = tmp_path/"demo"
    args = ["demo", "--out", d, "--lora-steps", "1", "--steps", "2", "--inversion-steps", "4", *TINY]
    code, out, err = call(capsys, *args)
    assert code == 0, err
    metrics = json.loads((d/"metrics.json").read_text())
    assert {"reconstruction", "global_transfer", "masked_transfer", "two_style_transfer", "seconds"} <= set(metrics)
    assert 0 <= metrics["masked_transfer"]["content_iou"] <= 1
    grid = Image.open(d/"grid.png"); assert grid.width > 5 * grid.height // 2
    # the classifier's verdict on every picture of the grid (and on each object of the two-style one)
    from diffstyler.toy import STYLES
    for k in ("content", "reconstruction", "no_injection_transfer", "global_transfer", "masked_transfer", "two_style_transfer"):
        assert metrics[k]["style"] in STYLES, k
    assert metrics["two_style_transfer"]["object_1_style"] in STYLES and metrics["two_style_transfer"]["object_2_style"] in STYLES
    assert metrics["style_images"] == {"stripes": "stripes", "dots": "dots"}     # the style pictures themselves: renders
    assert metrics["content"]["style"] == "flat" and metrics["content"]["content_iou"] > 0.9
    before = snapshot(d)
    code, _, err = call(capsys, *args)           # again, without --overwrite: refused, nothing touched
    assert code == 2 and "--overwrite" in err and snapshot(d) == before


def test_toy_train_runs_resumes_and_copies_the_model(tmp_path, capsys):
    run, model = tmp_path/"run", tmp_path/"model"
    args = ["toy-train", "--run", run, "--max-steps", "2", "--pool", "4", "--layouts", "1", "--quiet"]
    code, _, err = call(capsys, *args)
    assert code == 0, err
    assert torch.load(run/"state.pt", weights_only=False)["step"] == 2 and (run/"ema"/"model_index.json").is_file()
    code, _, err = call(capsys, *args)                           # the run exists: refused, one line, nothing touched
    assert code == 2 and "--resume" in err and "Traceback" not in err, err
    code, _, err = call(capsys, *args, "--resume", "--layouts", "2")
    assert code == 2 and "--layouts 2" in err, err               # a resume keeps the run's recipe
    code, _, err = call(capsys, *args[:4], "3", *args[5:], "--resume", "--out", model)
    assert code == 0, err
    assert torch.load(run/"state.pt", weights_only=False)["step"] == 3
    events = [json.loads(l).get("event") for l in (model/"train_log.jsonl").read_text().splitlines()]
    assert "resume" in events and events[-1] == "phase-summary"
    before = snapshot(model)
    code, _, err = call(capsys, "toy-train", "--run", tmp_path/"run2", "--max-steps", "1", "--pool", "4", "--out", model, "--quiet")
    assert code == 2 and "--overwrite" in err and snapshot(model) == before and not (tmp_path/"run2").exists()
    code, _, err = call(capsys, "toy-train", "--run", tmp_path/"run3", "--init", tmp_path/"nothing", "--quiet")
    assert code == 2 and "--init" in err, err


def test_toy_eval_prints_and_writes_every_bar(tmp_path, capsys):
    from diffstyler.toy import BARS
    out = tmp_path/"e.json"
    args = ["toy-eval", "--out", out, "--contents", "1", "--n", "2", "--steps", "2", "--inversion-steps", "2",
            "--fixed-point-iters", "0", "--lora-steps", "1", *TINY]
    code, stdout, err = call(capsys, *args)
    assert code == 0, err
    res = json.loads(out.read_text())
    assert set(res["bars"]) == set(BARS) and res["n_contents"] == 1
    assert all(f"| {k} | " in stdout for k in BARS) and "bars pass" in stdout
    assert json.loads((tmp_path/"e.config.json").read_text())["contents"] == 1
    code, _, err = call(capsys, *args)
    assert code == 2 and "--overwrite" in err
    code, _, err = call(capsys, "toy-eval", "--out", tmp_path/"f.json", "--contents", "0", *TINY)
    assert code == 2 and "--contents" in err and not (tmp_path/"f.json").exists()


def _env():
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", PYTHONPATH=str(ROOT))
    return env


def _wait_for_checkpoint(d, alive=lambda: True, timeout=150):
    t0 = time.time()
    while not list(d.glob("checkpoint-*")) and time.time() - t0 < timeout and alive(): time.sleep(0.05)
    return bool(list(d.glob("checkpoint-*")))


def _assert_clean(d):
    assert not (d/WEIGHT_NAME).exists()                                                   # no final file
    assert not [f for f in d.rglob("*") if f.name.endswith(".tmp") or f.name.startswith(".")]  # no temporary file
    cks = sorted(d.glob("checkpoint-*"))
    assert cks and all((c/WEIGHT_NAME).is_file() and (c/STATE_NAME).is_file() for c in cks)   # checkpoints complete
    return int(cks[-1].name.split("-")[1])


def test_interrupted_training_leaves_no_partial_file_and_resumes(ws, tmp_path, capsys):
    "SIGTERM to a real process and SIGINT in-process, mid-run: exit 143/130, no weights or temp file; --resume continues."
    import threading
    term = tmp_path/"lora-term"
    cmd = [sys.executable, "-m", "diffstyler.cli"]
    proc = subprocess.Popen(cmd + ["train-lora", str(ws/"style.png"), "--prompt", "p", "--out", str(term), "--steps", "100000",
                                   "--checkpoint-every", "1", *TINY], cwd=ROOT, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    # meanwhile, a bad input in a real process: exit code 2, one line, no traceback
    bad = subprocess.Popen(cmd + ["invert", str(ws/"missing.png"), "--out", str(tmp_path/"x.safetensors"), *TINY],
                           cwd=ROOT, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    # SIGINT (Ctrl-C) in this process, sent once the first checkpoint exists
    intr = tmp_path/"lora-int"
    def ctrl_c():
        if _wait_for_checkpoint(intr): time.sleep(0.2); os.kill(os.getpid(), signal.SIGINT)
    threading.Thread(target=ctrl_c, daemon=True).start()
    # a shell that starts us in the background (`cmd &` without job control) leaves SIGINT ignored, and Python then
    # never raises KeyboardInterrupt: install the default handler for this test, as an interactive terminal has it
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        code, out, err = call(capsys, "train-lora", ws/"style.png", "--prompt", "p", "--out", intr, "--steps", "100000",
                              "--checkpoint-every", "1", *TINY)
    finally: signal.signal(signal.SIGINT, previous)
    assert code == 130 and "interrupted" in err and "Traceback" not in err and out == "", err
    _assert_clean(intr)
    # SIGTERM to the subprocess
    assert _wait_for_checkpoint(term, lambda: proc.poll() is None), proc.communicate()[1].decode()[-2000:]
    time.sleep(0.3)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=90)
    err = err.decode()
    assert proc.returncode == 143 and "Traceback" not in err and "interrupted" in err, err[-2000:]
    n = _assert_clean(term)
    _, berr = bad.communicate(timeout=120)
    assert bad.returncode == 2 and "Traceback" not in berr and "missing.png" in berr.strip().splitlines()[-1], berr
    # resume, a few steps past the last checkpoint
    code, out, err = call(capsys, "train-lora", ws/"style.png", "--prompt", "p", "--out", term, "--steps", n + 2,
                          "--checkpoint-every", "1", "--resume", *TINY)
    assert code == 0, err
    assert f"resuming from checkpoint step {n}" in err and out.strip() == str(term/WEIGHT_NAME)
    info = json.loads((term/"diffstyler_lora.json").read_text())
    assert info["steps"] == n + 2 and len(info["loss_history"]) == n + 2
    assert json.loads((term/"pytorch_lora_weights.config.json").read_text())["resumed"] is True
