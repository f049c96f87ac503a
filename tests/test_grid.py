"""Grids: an interrupted batch resumes where it stopped and never redoes or overwrites a finished cell; settings that
would mix two experiments are refused; under `accelerate launch` two CPU processes share the cells, each computed once,
and the main process gathers the table. Toy model, tiny sizes and few steps."""
import csv, json, os, subprocess, sys
from pathlib import Path

import pytest
import yaml

from diffstyler import grid as G
from diffstyler.core import InputError
from diffstyler.toy import render_scene

ROOT = Path(__file__).resolve().parents[1]
FAST = dict(model="toy", presets=["paper"], steps=2, inversion_steps=2, lora=dict(steps=2, rank=2, lr=1e-3), metrics=dict(weights="random", lpips_net="squeeze"))


def make_grid(folder: Path, n_contents=2, n_styles=2, **kw) -> Path:
    (folder/"c").mkdir(parents=True, exist_ok=True); (folder/"s").mkdir(exist_ok=True)
    shapes = [("circle", "red"), ("square", "blue"), ("star", "green")]
    looks = [("black", "stripes"), ("gray", "dots"), ("white", "checker")]
    for i in range(n_contents): render_scene([shapes[i]], "white", "flat", seed=i)[0].save(folder/"c"/f"c{i}.png")
    for j in range(n_styles): render_scene([("triangle", "yellow")], *looks[j], seed=10 + j)[0].save(folder/"s"/f"s{j}.png")
    cfg = dict(FAST, out="out", contents="c", styles="s", style_prompt="yellow triangle", **kw)
    (folder/"grid.yaml").write_text(yaml.safe_dump(cfg))
    return folder/"grid.yaml"


def files(out: Path) -> dict:
    return {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted((out/"cells").iterdir())}


def test_interrupted_grid_resumes_without_redoing(tmp_path, monkeypatch):
    cfg = make_grid(tmp_path)
    calls = {"n": 0}
    real = G._runs().run_plan

    def flaky(*a, **k):
        calls["n"] += 1
        if calls["n"] == 2: raise KeyboardInterrupt   # Ctrl-C during the second transfer
        return real(*a, **k)

    monkeypatch.setattr(G._runs(), "run_plan", flaky)
    with pytest.raises(KeyboardInterrupt): G.run_grid(cfg)
    spec = G.load_grid(cfg)
    states = [G.cell_state(c) for c in G.grid_cells(spec)]
    assert states == ["done", "todo", "todo", "todo"]
    assert not [p for p in (tmp_path/"out"/"cells").iterdir() if p.name.startswith(".")]   # no temporary leftovers
    before = files(tmp_path/"out")
    monkeypatch.setattr(G._runs(), "run_plan", real)
    res = G.run_grid(cfg)
    assert res["computed"] == [c["name"] for c in G.grid_cells(spec)[1:]]
    after = files(tmp_path/"out")
    assert all(after[k] == v for k, v in before.items())                                 # finished cell untouched
    rows = list(csv.DictReader(open(tmp_path/"out"/"metrics.csv")))
    assert len(rows) == 4 and len({(r["content"], r["style"]) for r in rows}) == 4
    summary = list(csv.DictReader(open(tmp_path/"out"/"summary.csv")))
    assert len(summary) == 1 and float(summary[0]["artfid"]) == pytest.approx((1 + float(summary[0]["lpips"])) * (1 + float(summary[0]["fid"])))
    assert (tmp_path/"out"/"metrics.png").stat().st_size > 1000


def test_image_done_metrics_missing_scores_without_recomputing(tmp_path, monkeypatch):
    cfg = make_grid(tmp_path, n_contents=1, n_styles=1)
    from diffstyler.evaluate import Evaluator
    monkeypatch.setattr(Evaluator, "score", lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt): G.run_grid(cfg)
    cell = G.grid_cells(G.load_grid(cfg))[0]
    assert G.cell_state(cell) == "image"
    image = Path(cell["image"]); stamp = (image.read_bytes(), image.stat().st_mtime_ns)
    monkeypatch.undo()
    monkeypatch.setattr(G._runs(), "run_plan", lambda *a, **k: pytest.fail("the transfer of a finished image ran again"))
    res = G.run_grid(cfg)
    assert res["computed"] == [cell["name"]] and G.cell_state(cell) == "done"
    assert (image.read_bytes(), image.stat().st_mtime_ns) == stamp


def test_settings_change_refused_new_cells_added(tmp_path):
    cfg = make_grid(tmp_path, n_contents=1, n_styles=1, presets=["paper"])
    G.run_grid(cfg)
    data = yaml.safe_load(cfg.read_text())
    with pytest.raises(InputError, match="steps=2, not 1"):
        G.run_grid(dict(data, steps=1, contents=str(tmp_path/"c"), styles=str(tmp_path/"s"), out=str(tmp_path/"out")))
    res = G.run_grid(dict(data, presets=["paper", "official"], contents=str(tmp_path/"c"), styles=str(tmp_path/"s"), out=str(tmp_path/"out")))
    assert res["computed"] == ["c0__s0__official"]
    assert [r["preset"] for r in res["summary"]] == ["paper", "official"]


def test_grid_file_errors(tmp_path):
    cfg = make_grid(tmp_path, n_contents=1, n_styles=1)
    data = yaml.safe_load(cfg.read_text())
    for change, needle in ((dict(presets=["nope"]), "preset 'nope'"), (dict(colour="red"), "unknown key 'colour'"),
                           (dict(lora=dict(epochs=3)), "unknown key 'epochs'"), (dict(styles="missing"), "does not exist"),
                           (dict(steps=1000), "steps=1000")):
        bad = tmp_path/"bad.yaml"; bad.write_text(yaml.safe_dump(dict(data, **change)))
        with pytest.raises(InputError, match=needle): G.load_grid(bad)
    (tmp_path/"s"/"c0.jpg").write_bytes((tmp_path/"c"/"c0.png").read_bytes())
    (tmp_path/"s2").mkdir(); (tmp_path/"s2"/"x.png").write_bytes(b"")
    with pytest.raises(InputError, match="same name 'c0'"): G.load_grid(dict(data, contents=[str(tmp_path/"c"/"c0.png"), str(tmp_path/"s"/"c0.jpg")], styles=str(tmp_path/"s")))


def test_two_processes_share_the_cells(tmp_path):
    "accelerate launch with 2 CPU processes (torchrun + gloo): every cell once, both processes worked, the main wrote the table."
    cfg = make_grid(tmp_path)
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    accelerate = Path(sys.executable).parent/"accelerate"
    cmd = [str(accelerate), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no",
           "--dynamo_backend", "no", "-m", "diffstyler.cli", "run", str(cfg), "--quiet"]
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert p.returncode == 0, p.stderr[-3000:]
    spec = G.load_grid(cfg)
    by = [json.loads(Path(c["image"]).with_suffix(".metrics.json").read_text())["computed_by"] for c in G.grid_cells(spec)]
    assert sorted(by) == [0, 0, 1, 1]
    rows = list(csv.DictReader(open(tmp_path/"out"/"metrics.csv")))
    assert sorted(r["content"] + r["style"] for r in rows) == ["c0s0", "c0s1", "c1s0", "c1s1"]
    assert p.stdout.split() == [str(tmp_path/"out"/f) for f in ("metrics.csv", "summary.csv", "metrics.png")]   # printed once, by the main process
    assert list(csv.DictReader(open(tmp_path/"out"/"summary.csv")))[0]["n"] == "4"


def test_cli_runs_a_grid(tmp_path, capsys):
    from diffstyler.cli import main
    cfg = make_grid(tmp_path, n_contents=1, n_styles=1)
    assert main(["run", str(cfg), "--quiet", "--overwrite"]) == 2
    assert "do not apply to grid file" in capsys.readouterr().err
    assert not (tmp_path/"out").exists()
    assert main(["run", str(cfg), "--quiet"]) == 0
    assert capsys.readouterr().out.split() == [str(tmp_path/"out"/f) for f in ("metrics.csv", "summary.csv", "metrics.png")]
    assert G.cell_state(G.grid_cells(G.load_grid(cfg))[0]) == "done"


def test_grid_with_every_method(tmp_path, monkeypatch):
    """1 content x 1 style x [paper, pnp, styleid, masactrl] on the tiny model: every cell finishes; the content is inverted once
    for all four (recording what each reads) and the style image once (styleid); only the paper cell uses the LoRA, pnp and
    masactrl the style's prompt, styleid the style's trajectory. A grid of only prompt-styled methods trains no LoRA."""
    import diffstyler.inversion as inversion
    from diffstyler.core import InjectionConfig
    n = {"ddim_invert": 0}
    real = inversion.ddim_invert
    def counting(*a, **k): n["ddim_invert"] += 1; return real(*a, **k)
    monkeypatch.setattr(inversion, "ddim_invert", counting)
    presets = ["paper", "pnp", "styleid", "masactrl"]
    cfg = make_grid(tmp_path, n_contents=1, n_styles=1, model="tiny", presets=presets, steps=6, inversion_steps=20)
    res = G.run_grid(cfg)
    assert res["computed"] == [f"c0__s0__{p}" for p in presets] and n["ddim_invert"] == 2
    out = tmp_path/"out"
    side = {p: json.loads((out/"cells"/f"c0__s0__{p}.config.json").read_text()) for p in presets}
    assert side["paper"]["lora"] == [str(out/"loras"/"s0"/"pytorch_lora_weights.safetensors")]
    assert [side[p]["lora"] for p in ("pnp", "styleid", "masactrl")] == [[], [], []]
    assert side["pnp"]["prompt_gene"] == side["masactrl"]["prompt_gene"] == ["yellow triangle"] and side["styleid"]["prompt_gene"] == [""]
    assert side["styleid"]["style_source"] == str(out/"style-sources"/"s0.safetensors") and side["pnp"]["style_source"] is None
    assert all(side[p]["injection"]["name"] == p and side[p]["injection"]["style_by"] == InjectionConfig.preset(p).style_by for p in presets)
    summary = list(csv.DictReader(open(out/"summary.csv")))
    assert [r["preset"] for r in summary] == presets and all(float(r["lpips"]) >= 0 for r in summary)
    again = G.run_grid(cfg)                            # resumed: nothing computed, nothing inverted
    assert again["computed"] == [] and n["ddim_invert"] == 2
    only = make_grid(tmp_path/"prompted", n_contents=1, n_styles=1, model="tiny", presets=["pnp", "masactrl"], steps=6, inversion_steps=20)
    assert G.run_grid(only)["computed"] == ["c0__s0__pnp", "c0__s0__masactrl"]
    assert not (tmp_path/"prompted"/"out"/"loras").exists() and not (tmp_path/"prompted"/"out"/"style-sources").exists()
    broken = make_grid(tmp_path/"broken", n_contents=1, n_styles=1, model="tiny", presets=["styleid"], steps=6, inversion_steps=20)
    (tmp_path/"broken"/"s"/"s0.png").write_bytes(b"not a picture")
    with pytest.raises(InputError, match="style image .*s0.png"): G.run_grid(broken)
