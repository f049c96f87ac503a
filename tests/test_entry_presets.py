"""The other methods' presets (pnp, masactrl: styled by the prompt alone; styleid: by the style image's DDIM trajectory)
through the command line and the YAML runs (the grid: tests/test_grid.py; the widgets: tests/test_widgets.py).
`diffstyler transfer` writes the picture and a sidecar naming the preset and its rules, with the input the method styles
with and no LoRA; the picture is the one `DiffStyler.transfer` makes with the base UNet; the combinations a method would
not use are refused with one line before anything is written; `diffstyler invert --record` takes the new names, for a
style image too. Tiny random pipeline, 6 sampling and 20 inversion steps."""
import dataclasses, json, logging
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from diffstyler.cli import main
from diffstyler.core import InjectionConfig, PRESETS
from diffstyler.inversion import SourceTrajectory
from diffstyler.runs import uses_lora, reads_style
from diffstyler.toy import render_scene
from test_cli import snapshot   # one copy of the helper (tests/ is on sys.path)

torch.set_num_threads(1)
TINY = ["--model", "tiny", "--quiet"]
STEPS, INV = 6, 20
FAST = ["--steps", str(STEPS), "--inversion-steps", str(INV)]
PROMPT = "stripes style, a yellow star"


def call(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def pixels(path): return np.asarray(Image.open(path).convert("RGB"), np.int16)


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    "Content and style images, a LoRA, the style's trajectory (--record styleid), a content trajectory recorded for paper only."
    w = tmp_path_factory.mktemp("presets")
    content, _, obj = render_scene([("circle", "red"), ("square", "blue")], "white", "flat", seed=1)
    content.save(w/"content.png")
    render_scene([("star", "yellow")], "black", "stripes", seed=2)[0].save(w/"style.png")
    Image.fromarray(obj[0].astype(np.uint8) * 255).save(w/"circle.png")
    (w/"notimage.png").write_text("not an image\n")
    assert main([str(a) for a in ["train-lora", w/"style.png", "--prompt", PROMPT, "--out", w/"lora", "--steps", "1",
                                  "--checkpoint-every", "0", *TINY]]) == 0
    assert main([str(a) for a in ["invert", w/"style.png", "--record", "styleid", "--out", w/"style.safetensors", *FAST, *TINY]]) == 0
    assert main([str(a) for a in ["invert", w/"content.png", "--record", "paper", "--out", w/"paper.safetensors", *FAST, *TINY]]) == 0
    assert main([str(a) for a in ["invert", w/"style.png", "--record", "styleid", "--out", w/"style5.safetensors",
                                  "--steps", "5", "--inversion-steps", str(INV), *TINY]]) == 0
    return w


def test_which_presets_use_what():
    "Read from each preset's config (style_by), not from a list of names."
    assert [p for p in PRESETS if uses_lora(p)] == ["paper", "official", "official_2024"]
    assert [p for p in PRESETS if reads_style(p)] == ["styleid"]
    assert {p: InjectionConfig.preset(p).style_by for p in PRESETS if not uses_lora(p)} == dict(pnp="prompt", styleid="image", masactrl="prompt")


CASES = {  # id: (preset, extra arguments)
    "pnp": ("pnp", lambda w: ["--prompt", PROMPT]),
    "masactrl": ("masactrl", lambda w: ["--prompt", PROMPT]),
    "styleid from the style image": ("styleid", lambda w: ["--style-image", w/"style.png"]),
    "styleid from the saved style trajectory": ("styleid", lambda w: ["--style-source", w/"style.safetensors"]),
}


@pytest.mark.parametrize("case", list(CASES))
def test_transfer_with_each_new_preset(case, ws, tmp_path, capsys):
    preset, extra = CASES[case]
    out = tmp_path/"out.png"
    code, stdout, err = call(capsys, "transfer", ws/"content.png", "--preset", preset, *extra(ws), *TINY, *FAST, "--out", out)
    assert code == 0, err
    assert stdout.strip() == str(out) and Image.open(out).size == Image.open(ws/"content.png").size
    cfg = json.loads((tmp_path/"out.config.json").read_text())
    want = InjectionConfig.preset(preset, STEPS)
    assert cfg["preset"] == preset and cfg["injection"]["name"] == preset and cfg["lora"] == []
    as_json = lambda x: json.loads(json.dumps(x))
    assert cfg["injection"] == as_json(want.to_dict()) and cfg["injection"]["style_by"] == want.style_by
    assert cfg["rules"] == as_json([dataclasses.asdict(r) for r in want.all_rules()]) and cfg["rules"]   # what is injected, knobs included
    assert cfg["guidance_scale"] == want.guidance_scale and (cfg["n_timesteps"], cfg["inversion_steps"]) == (STEPS, INV)
    assert cfg["prompt_gene"] == ([PROMPT] if want.style_by == "prompt" else [""])
    if preset == "styleid":
        assert (cfg["style_image"], cfg["style_source"]) == ((str(ws/"style.png"), None) if "image" in case else (None, str(ws/"style.safetensors")))


def test_pictures_are_the_methods(ws, tmp_path, capsys):
    """The command's pictures are DiffStyler.transfer's with the base UNet (no LoRA): pnp with the prompt, styleid with the
    style's trajectory; the prompt changes pnp's picture, and styleid from the image equals styleid from its saved trajectory."""
    from diffstyler.models import load_pipeline
    from diffstyler.transfer import DiffStyler
    run = lambda name, *a: call(capsys, "transfer", ws/"content.png", *a, *TINY, *FAST, "--out", tmp_path/name)[0]
    assert run("pnp.png", "--preset", "pnp", "--prompt", PROMPT) == 0
    assert run("pnp2.png", "--preset", "pnp", "--prompt", "dots style, a blue square") == 0
    assert run("sid_img.png", "--preset", "styleid", "--style-image", ws/"style.png") == 0
    assert run("sid_src.png", "--preset", "styleid", "--style-source", ws/"style.safetensors") == 0
    assert np.abs(pixels(tmp_path/"sid_img.png") - pixels(tmp_path/"sid_src.png")).max() <= 1
    assert np.abs(pixels(tmp_path/"pnp.png") - pixels(tmp_path/"pnp2.png")).max() > 10
    ds = DiffStyler(load_pipeline("tiny"))
    src = ds.invert(str(ws/"content.png"), INV, STEPS, record=["pnp", "styleid"], progress=False)
    sty = SourceTrajectory.load(ws/"style.safetensors")
    pnp = ds.transfer(src, prompt=PROMPT, config=InjectionConfig.preset("pnp", STEPS), progress=False).image
    sid = ds.transfer(src, config=InjectionConfig.preset("styleid", STEPS), style_source=sty, progress=False).image
    assert np.abs(pixels(tmp_path/"pnp.png") - np.asarray(pnp, np.int16)).max() <= 1
    assert np.abs(pixels(tmp_path/"sid_src.png") - np.asarray(sid, np.int16)).max() <= 1
    # a masked pnp transfer keeps the outside of the mask the content's reconstruction
    assert run("pnp_masked.png", "--preset", "pnp", "--prompt", PROMPT, "--mask", ws/"circle.png") == 0
    outside = ~np.asarray(Image.open(ws/"circle.png")).astype(bool)
    masked, rec = pixels(tmp_path/"pnp_masked.png"), np.asarray(ds.reconstruct(src).image, np.int16)
    assert np.abs(masked - rec)[outside].mean() < np.abs(pixels(tmp_path/"pnp.png") - rec)[outside].mean()


def test_invert_records_the_new_presets(ws, tmp_path, capsys):
    "--record takes the new names, several for their union; a style image recorded for styleid holds what styleid reads of a style."
    sty = SourceTrajectory.load(ws/"style.safetensors")
    assert json.loads((ws/"style.config.json").read_text())["record"] == "styleid"
    sty.check_covers(InjectionConfig.preset("styleid", STEPS), role="style")
    out = tmp_path/"multi.safetensors"
    assert call(capsys, "invert", ws/"content.png", "--record", "paper", "masactrl", "styleid", "--out", out, *FAST, *TINY)[0] == 0
    src = SourceTrajectory.load(out)
    for p in ("paper", "masactrl", "styleid"):
        src.check_covers(InjectionConfig.preset(p, STEPS))
    with pytest.raises(Exception, match="pnp"): src.check_covers(InjectionConfig.preset("pnp", STEPS))
    assert json.loads((tmp_path/"multi.config.json").read_text())["record"] == ["paper", "masactrl", "styleid"]
    # a transfer from the saved content trajectory equals one from the image
    assert call(capsys, "transfer", out, "--preset", "masactrl", "--prompt", PROMPT, *TINY, "--out", tmp_path/"a.png")[0] == 0
    assert call(capsys, "transfer", ws/"content.png", "--preset", "masactrl", "--prompt", PROMPT, *TINY, *FAST, "--out", tmp_path/"b.png")[0] == 0
    assert np.abs(pixels(tmp_path/"a.png") - pixels(tmp_path/"b.png")).max() <= 1
    # --role style keeps only what a style gives StyleID (its K and V, on the inversion latents), and still serves it
    slim = tmp_path/"slim.safetensors"
    assert call(capsys, "invert", ws/"style.png", "--record", "styleid", "--role", "style", "--out", slim, *FAST, *TINY)[0] == 0
    slim_src = SourceTrajectory.load(slim)
    assert {k for _, _, k in slim_src.store.data} == {"inv_self_k", "inv_self_v"} and slim_src.store.nbytes < sty.store.nbytes
    slim_src.check_covers(InjectionConfig.preset("styleid", STEPS), role="style")


T = lambda w, preset, *a: ["transfer", w/"content.png", "--preset", preset, *a, *TINY, *FAST, "--out", w/"bad.png"]
BAD = {  # id: (argv builder, what the one line must say)
    "styleid without a style": (lambda w: T(w, "styleid"), "--style-image STYLE.png"),
    "styleid with image and source": (lambda w: T(w, "styleid", "--style-image", w/"style.png", "--style-source", w/"style.safetensors"), "not both"),
    "pnp with --lora": (lambda w: T(w, "pnp", "--prompt", PROMPT, "--lora", w/"lora"), "drop --lora"),
    "masactrl with --lora": (lambda w: T(w, "masactrl", "--prompt", PROMPT, "--lora", w/"lora"), "drop --lora"),
    "styleid with --lora": (lambda w: T(w, "styleid", "--style-image", w/"style.png", "--lora", w/"lora"), "drop --lora"),
    "paper without --lora": (lambda w: T(w, "paper"), "no --lora given"),
    "official without --lora": (lambda w: T(w, "official"), "no --lora given"),
    "pnp without --prompt": (lambda w: T(w, "pnp"), "--prompt"),
    "masactrl with two prompts": (lambda w: T(w, "masactrl", "--prompt", "a", "--prompt", "b"), "one --prompt"),
    "paper with --style-image": (lambda w: T(w, "paper", "--lora", w/"lora", "--style-image", w/"style.png"), "drop --style-image"),
    "pnp with --style-source": (lambda w: T(w, "pnp", "--prompt", PROMPT, "--style-source", w/"style.safetensors"), "drop --style-source"),
    "style source missing": (lambda w: T(w, "styleid", "--style-source", w/"nope.safetensors"), "nope.safetensors"),
    "style source not a trajectory": (lambda w: T(w, "styleid", "--style-source", w/"style.png"), "not a .safetensors"),
    "style image not an image": (lambda w: T(w, "styleid", "--style-image", w/"notimage.png"), "notimage.png"),
    "style source of other steps": (lambda w: T(w, "styleid", "--style-source", w/"style5.safetensors"), "--steps 6"),
    "style source lacking styleid's K, V": (lambda w: T(w, "styleid", "--style-source", w/"paper.safetensors"), "--record styleid"),
    "content trajectory lacking masactrl's V": (lambda w: ["transfer", w/"paper.safetensors", "--preset", "masactrl", "--prompt", PROMPT,
                                                           *TINY, "--out", w/"bad.png"], "--record masactrl"),
    "pnp with two masks": (lambda w: T(w, "pnp", "--prompt", PROMPT, "--mask", w/"circle.png", "--mask", w/"circle.png"), "one mask"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_combinations(case, ws, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    # ultralytics (imported by earlier tests for FastSAM) patches PIL's Image.open and logs through a handler bound to a
    # stream pytest has since closed; its "--- Logging error ---" report is not ours to judge
    monkeypatch.setattr(logging, "raiseExceptions", False)
    build, needle = BAD[case]
    before = snapshot(ws)
    code, out, err = call(capsys, *build(ws))
    assert code == 2, (case, err)
    assert needle in err and "Traceback" not in err and out == "", (case, err)
    assert len([l for l in err.splitlines() if "error" in l]) == 1, (case, err)
    assert snapshot(ws) == before, case


def test_yaml_runs_with_new_presets(ws, tmp_path, capsys):
    "A run file takes the new presets (style_image relative to the file); a sidecar runs again as a run file, giving the same picture."
    (tmp_path/"s.png").write_bytes((ws/"style.png").read_bytes())
    y = tmp_path/"batch.yaml"
    y.write_text(f"""\
runs:
  - {{preset: pnp, prompt_gene: '{PROMPT}', output_path: pnp.png}}
  - {{preset: styleid, style_image: s.png, output_path: styleid.png}}
  - {{preset: masactrl, prompts: ['{PROMPT}'], output_path: masactrl.png}}
image_path: {ws/'content.png'}
n_timesteps: {STEPS}
inversion_steps: {INV}
""")
    code, out, err = call(capsys, "run", y, *TINY)
    assert code == 0, err
    assert out.split() == [str(tmp_path/f"{n}.png") for n in ("pnp", "styleid", "masactrl")]
    for n in ("pnp", "styleid", "masactrl"):
        cfg = json.loads((tmp_path/f"{n}.config.json").read_text())
        assert cfg["preset"] == n and cfg["lora"] == [] and len(cfg["rules"]) == len(InjectionConfig.preset(n, STEPS).all_rules())
    assert json.loads((tmp_path/"styleid.config.json").read_text())["style_image"] == str(tmp_path/"s.png")
    code, _, err = call(capsys, "run", tmp_path/"styleid.config.json", "--set", "output_path=again.png", *TINY)
    assert code == 0, err
    assert np.abs(pixels(tmp_path/"again.png") - pixels(tmp_path/"styleid.png")).max() <= 1
    (tmp_path/"bad.yaml").write_text(f"{{preset: pnp, image_path: {ws/'content.png'}, lora_name: {ws/'lora'}, prompt_gene: x, output_path: o.png}}\n")
    code, _, err = call(capsys, "run", tmp_path/"bad.yaml", *TINY)
    assert code == 2 and "run 1" in err and "drop --lora" in err
