"""`diffstyler run` on the authors' four shipped configs, in a folder laid out like their repository.

The configs, photos and masks are read from ../shared/data/authors-demo (no licence: never copied into the project);
the test lays them out in a temporary folder as their repository has them (configs/, data/, mask/) and writes its own
LoRA files in their format (lora_models/NAME.ckpt: a pickled dict of tensors with diffusers 0.17.1 attention-processor
keys, rank 16), sized for the tiny model. Their scheme and values must come out: preset `official` (their latest code),
pnp_f_t / pnp_attn_t ignored, guidance 10.5 and their negative prompt, their names resolved from the repository root.
"""
import json
import shutil
import warnings
from pathlib import Path
import pytest
import torch
import diffstyler as ds
from diffstyler.cli import main
from diffstyler.runs import load_runs, run_to_plan, is_authors_run

AUTHORS = next((p for p in (Path(__file__).resolve().parents[2]/"shared/data/authors-demo", Path("/work/shared/data/authors-demo"))
                if p.exists()), None)
pytestmark = pytest.mark.skipif(AUTHORS is None, reason="the authors' demo files are not on this machine")
CONFIGS = ("config-girl1.yaml", "config-deer1.yaml", "config-deer1-1.yaml", "config-deer1-2.yaml")
NEG = "ugly, blurry, black, low res, unrealistic"


def authors_ckpt(unet, path, rank=16, seed=0):
    "A LoRA file as their lora_train.py writes it: torch.save of {'<attn>.processor.to_q_lora.down.weight': tensor, ...}."
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for name in unet.attn_processors:
        attn = unet.get_submodule(name.rsplit(".processor", 1)[0])
        for proj, lin in (("to_q", attn.to_q), ("to_k", attn.to_k), ("to_v", attn.to_v), ("to_out", attn.to_out[0])):
            sd[f"{name}.{proj}_lora.down.weight"] = torch.randn(rank, lin.in_features, generator=g) * 0.1
            sd[f"{name}.{proj}_lora.up.weight"] = torch.randn(lin.out_features, rank, generator=g) * 0.1
    torch.save(sd, path)


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    "A folder laid out like lishaoxu1994/DiffStyler: configs/, data/, mask/, lora_models/ (results/ is made by the run)."
    root = tmp_path_factory.mktemp("DiffStyler")
    for sub in ("configs", "data", "mask", "lora_models"): (root/sub).mkdir()
    for f in AUTHORS.iterdir():
        dest = {".yaml": "configs", ".jpg": "data", ".png": "mask"}.get(f.suffix)
        if dest: shutil.copyfile(f, root/dest/f.name)   # a temporary copy for the test only
    unet = ds.load_pipeline("tiny").unet
    for i, name in enumerate(("lora_girl_c1", "lora_deer_c1", "lora_deer_c2")): authors_ckpt(unet, root/"lora_models"/f"{name}.ckpt", seed=i)
    return root


@pytest.mark.parametrize("config", CONFIGS)
def test_names_and_scheme_as_their_scripts(repo, config):
    (r,) = load_runs(repo/"configs"/config)
    assert is_authors_run(r)
    plan = run_to_plan(r, repo/"configs", config, roots=[repo/"configs", repo/"configs"/".."])
    names = [s.strip() for s in r["lora_name"].split(";")]
    assert [Path(l) for l in plan["loras"]] == [repo/"configs"/".."/"lora_models"/f"{n}.ckpt" for n in names]
    assert [Path(m).resolve() for m in plan["masks"]] == [(repo/"mask"/f"{m.strip()}.png").resolve() for m in r["mask"].split(";")]
    assert Path(plan["content"]).resolve() == (repo/r["image_path"]).resolve()
    assert Path(plan["out"]).resolve() == (repo/r["output_path"]/"output-.png").resolve()
    assert (plan["preset"], plan["feature_steps"], plan["attention_steps"]) == ("official", None, None)   # pnp_* ignored
    assert (plan["guidance"], plan["negative_prompt"], plan["steps"]) == (10.5, NEG, 50)


def test_four_configs_run_from_their_repository(repo, capsys):
    "Each config runs as shipped (only the step counts are cut for the tiny model); their scheme lands in the sidecar."
    for config in CONFIGS:
        r = load_runs(repo/"configs"/config)[0]
        code = main(["run", repo/"configs"/config, "--model", "tiny", "--quiet", "--overwrite",
                     "--set", "n_timesteps=5", "--set", "inversion_steps=10"])
        err = capsys.readouterr().err
        assert code == 0, err
        png = repo/r["output_path"]/"output-.png"   # where their sample_loop saves: output_path/output-{prompt}.png
        assert png.exists()
        c = json.loads(png.with_name(png.stem + ".config.json").read_text())
        inj = c["injection"]
        assert (c["preset"], c["guidance_scale"], c["negative_prompt"]) == ("official", 10.5, NEG)
        assert (inj["feature_layers"], inj["attention_layers"], inj["cross_attention"], inj["qk_blend_t"]) == ([4], list(range(4, 12)), False, 500)
        assert (inj["source"], inj["fusion"], inj["mask_mode"], inj["literal_steps"]) == ("lora", "noise", "binary", True)
        assert (inj["feature_steps"], inj["attention_steps"], inj["base_steps"]) == (5, 5, 5)   # 30/25/50 capped at 5 steps
        assert [Path(l).name for l in c["lora"]] == [f"{n.strip()}.ckpt" for n in r["lora_name"].split(";")]
        assert all(Path(m).parent.name == "mask" for m in c["mask"])


def test_paper_reading_of_the_same_file(repo):
    "preset: paper reads pnp_f_t / pnp_attn_t as fractions of n_timesteps (0.8 and 0.5 of 50: 40 and 25)."
    (r,) = load_runs(repo/"configs"/"config-girl1.yaml", {"preset": "paper"})
    plan = run_to_plan(r, repo, "girl1")
    assert (plan["preset"], plan["feature_steps"], plan["attention_steps"]) == ("paper", 40, 25)


def test_a_pickle_with_code_is_refused(repo, tmp_path, capsys):
    "Anything in a .ckpt that is not plain tensors is refused before any model is loaded (torch.load(weights_only=True))."
    bad = tmp_path/"DiffStyler"
    shutil.copytree(repo, bad, ignore=shutil.ignore_patterns("results"))
    torch.save({"x": torch.zeros(1), "f": print}, bad/"lora_models"/"lora_girl_c1.ckpt")
    code = main(["run", bad/"configs"/"config-girl1.yaml", "--model", "tiny", "--quiet", "--set", "n_timesteps=5"])
    err = capsys.readouterr().err
    errors = [l for l in err.splitlines() if "error:" in l]
    assert code == 2 and len(errors) == 1 and "lora_girl_c1.ckpt" in errors[0] and "weights_only=True" in errors[0], err
