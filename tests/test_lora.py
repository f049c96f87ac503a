"""Style LoRA (issue 4): training on one image, diffusers-format files, several adapters in one UNet, checkpoints.

Everything runs on the tiny random pipeline, offline, on CPU."""
import json, os, signal, subprocess, sys, textwrap, time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from diffstyler.core import InputError, ModelNotAvailableError
from diffstyler.models import encode_image, encode_text, tiny_pipeline
from diffstyler.core import prepare_image
from diffstyler.lora import (INFO_NAME, STATE_NAME, WEIGHT_NAME, StyleLoRA, adapter_names, delete_lora, load_lora,
                             save_lora, style_loss, train_lora, use_adapter, _adapter_params, _train_scheduler)

ROOT = Path(__file__).resolve().parent.parent
PROMPT = "a painting in <sss> style"
torch.set_num_threads(1)   # the CI machine has 2 shared cores


def stripes(size=64, period=8, colors=((230, 60, 40), (30, 40, 200))):
    y, x = np.mgrid[:size, :size]
    return np.array(colors, dtype=np.uint8)[((x + y) // period) % 2]


def checks(size=64, period=16, colors=((240, 220, 30), (20, 150, 60))):
    y, x = np.mgrid[:size, :size]
    return np.array(colors, dtype=np.uint8)[((x // period) + (y // period)) % 2]


PROBE = (torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(3)), torch.tensor([500]))


@torch.no_grad()
def out(pipe, name):
    "The UNet's prediction for a fixed latent, timestep and prompt with adapter `name` (None: base)."
    z, t = PROBE
    with use_adapter(pipe.unet, name):
        return pipe.unet(z, t, encode_text(pipe, PROMPT)).sample


def base_state(unet):
    "The UNet's own weights, with peft's wrapper names mapped back."
    return {k.replace(".base_layer", ""): v.clone() for k, v in unet.state_dict().items() if ".lora_" not in k}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    "One pipeline with two styles trained in it and saved; the recorded outputs; the base weights before training."
    tmp = tmp_path_factory.mktemp("lora")
    pipe = tiny_pipeline(0)
    before = base_state(pipe.unet)
    base_out = out(pipe, None)
    grads = []

    class RecordingAdamW(torch.optim.AdamW):   # which tensors carry a gradient when the optimizer steps
        def step(self, *a, **kw):
            grads.append({n for n, p in pipe.unet.named_parameters() if p.grad is not None})
            return super().step(*a, **kw)

    orig = torch.optim.AdamW
    torch.optim.AdamW = RecordingAdamW
    try:
        s1 = train_lora(pipe, stripes(), PROMPT, rank=4, alpha=4, steps=30, lr=1e-2, name="stripes",
                        save_to=tmp / "stripes", progress=False)
    finally:
        torch.optim.AdamW = orig
    s2 = train_lora(pipe, checks(), PROMPT, rank=4, alpha=2, steps=20, lr=1e-2, name="checks",
                    save_to=tmp / "checks", progress=False)
    outs = {n: out(pipe, n) for n in (None, "stripes", "checks")}
    return dict(pipe=pipe, tmp=tmp, s1=s1, s2=s2, before=before, base_out=base_out, outs=outs, grads=grads)


def test_loss_decreases(trained):
    h = np.array(trained["s1"].loss_history)
    assert len(h) == 30 and trained["s1"].steps == 30
    k = 8
    assert h[-k:].mean() < h[:k].mean() - 0.05, (h[:k].mean(), h[-k:].mean())
    pipe = trained["pipe"]
    assert style_loss(pipe, stripes(), PROMPT, "stripes") < style_loss(pipe, stripes(), PROMPT, None) - 0.05


def test_only_lora_has_gradients_and_base_is_bit_identical(trained):
    pipe = trained["pipe"]
    lora_names = {n for n, p in pipe.unet.named_parameters() if ".lora_A.stripes." in n or ".lora_B.stripes." in n}
    assert len(lora_names) == 2 * 3 * 32            # A and B, q/k/v, 32 attention modules in the tiny UNet
    assert trained["grads"] and all(g == lora_names for g in trained["grads"])
    now = base_state(pipe.unet)
    assert sorted(now) == sorted(trained["before"])
    for k, v in trained["before"].items():
        assert torch.equal(now[k], v), k
    assert not any(p.requires_grad for p in pipe.unet.parameters())
    assert all(p.grad is None for p in pipe.unet.parameters())
    assert not pipe.unet.training
    assert not any(p.requires_grad for p in pipe.vae.parameters()) and not any(p.requires_grad for p in pipe.text_encoder.parameters())


def test_use_adapter_none_is_base_and_restores(trained):
    pipe, outs = trained["pipe"], trained["outs"]
    assert torch.equal(outs[None], trained["base_out"])
    assert (outs["stripes"] - outs[None]).abs().mean() > 1e-3
    assert (outs["checks"] - outs["stripes"]).abs().mean() > 1e-3
    assert pipe.unet.active_adapters() == ["checks"]          # the newest adapter is left active, as diffusers does
    with pytest.raises(RuntimeError):
        with use_adapter(pipe, "stripes"):
            assert pipe.unet.active_adapters() == ["stripes"]
            raise RuntimeError("boom")
    assert pipe.unet.active_adapters() == ["checks"]
    assert torch.equal(out(pipe, "checks"), outs["checks"])
    with pytest.raises(InputError, match="no LoRA adapter named 'nope'"):
        with use_adapter(pipe, "nope"): pass


def test_files_and_sidecar(trained):
    tmp = trained["tmp"]
    assert sorted(p.name for p in (tmp / "stripes").iterdir()) == [INFO_NAME, WEIGHT_NAME]
    with safe_open(str(tmp / "stripes" / WEIGHT_NAME), "pt") as fh:
        meta = json.loads(fh.metadata()["lora_adapter_metadata"])
        keys = list(fh.keys())
    assert meta["unet.r"] == 4 and meta["unet.lora_alpha"] == 4 and meta["unet.target_modules"] == ["to_k", "to_q", "to_v"]
    assert all(k.startswith("unet.") and (".lora.down." in k or ".lora.up." in k) for k in keys)
    info = json.loads((tmp / "stripes" / INFO_NAME).read_text())
    assert info["prompt"] == PROMPT and info["steps"] == 30 and info["loss_history"] == trained["s1"].loss_history
    assert info["base"]["cross_attention_dim"] == 32
    assert trained["s1"].path == tmp / "stripes" / WEIGHT_NAME


def test_save_load_round_trip(trained):
    fresh = tiny_pipeline(0)
    s = load_lora(fresh, trained["tmp"] / "stripes")
    assert isinstance(s, StyleLoRA) and s.name == "stripes"
    assert (s.rank, s.alpha, s.prompt, s.steps) == (4, 4, PROMPT, 30)
    assert s.loss_history == trained["s1"].loss_history
    assert torch.equal(out(fresh, "stripes"), trained["outs"]["stripes"])
    assert torch.equal(out(fresh, None), trained["outs"][None])


def test_plain_diffusers_loads_our_file(trained):
    plain = tiny_pipeline(0)
    plain.load_lora_weights(str(trained["tmp"] / "checks"), adapter_name="mine")
    plain.set_adapters(["mine"])
    with torch.no_grad():
        z, t = PROBE
        o = plain.unet(z, t, encode_text(plain, PROMPT)).sample
    torch.testing.assert_close(o, trained["outs"]["checks"], rtol=0, atol=1e-6)   # alpha=2 != rank=4 survived


def test_two_adapters_reproduce_single_ones(trained):
    both = tiny_pipeline(0)
    load_lora(both, trained["tmp"] / "stripes"); load_lora(both, trained["tmp"] / "checks")
    assert adapter_names(both) == ["stripes", "checks"]
    for name in ("checks", "stripes"):
        single = tiny_pipeline(0)
        load_lora(single, trained["tmp"] / name)
        assert torch.equal(out(both, name), out(single, name))
        assert torch.equal(out(both, name), trained["outs"][name])
    assert torch.equal(out(both, None), trained["outs"][None])
    delete_lora(both, "stripes")
    assert adapter_names(both) == ["checks"] and torch.equal(out(both, "checks"), trained["outs"]["checks"])


def test_metadata_keeps_alpha(trained, tmp_path):
    "Without the header a loader assumes alpha = rank: the 'checks' style (alpha 2, rank 4) would come back twice as strong."
    bare = tmp_path / "bare.safetensors"
    save_file(load_file(str(trained["tmp"] / "checks" / WEIGHT_NAME)), str(bare), metadata={"format": "pt"})
    fresh = tiny_pipeline(0)
    s = load_lora(fresh, bare)
    assert s.name == "bare" and s.alpha == 4
    assert (out(fresh, "bare") - trained["outs"]["checks"]).abs().max() > 1e-3


def test_kohya_names_with_alpha_load(trained, tmp_path):
    "A LoRA in kohya's key names with per-module alpha tensors (the common community format) loads and matches."
    k = {}
    for key, v in load_file(str(trained["tmp"] / "checks" / WEIGHT_NAME)).items():
        mod, kind = key[len("unet."):].split(".lora.")
        stem = "lora_unet_" + mod.replace(".", "_")
        k[f"{stem}.lora_{kind}"] = v
        k[f"{stem}.alpha"] = torch.tensor(2.0)
    save_file(k, str(tmp_path / "kohya.safetensors"))
    fresh = tiny_pipeline(0)
    s = load_lora(fresh, tmp_path / "kohya.safetensors", name="k")
    assert (s.name, s.rank, s.alpha) == ("k", 4, 2)
    torch.testing.assert_close(out(fresh, "k"), trained["outs"]["checks"], rtol=0, atol=1e-6)


def test_bad_files(trained, tmp_path, monkeypatch):
    pipe = tiny_pipeline(0)
    (tmp_path / "empty").mkdir()
    (tmp_path / "pickled").mkdir(); (tmp_path / "pickled" / "pytorch_lora_weights.bin").write_bytes(b"x")
    (tmp_path / "model.ckpt").write_bytes(b"x")
    (tmp_path / "notes.txt").write_text("x")
    sd2 = {"unet.down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k.lora.down.weight": torch.zeros(4, 1024),
           "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k.lora.up.weight": torch.zeros(320, 4),
           "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.lora.down.weight": torch.zeros(4, 320),
           "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.lora.up.weight": torch.zeros(320, 4)}
    save_file(sd2, str(tmp_path / "sd2.safetensors"))
    sd1 = {k.replace("attn2.to_k.lora.down", "attn2.to_k.lora.down"): (torch.zeros(4, 768) if "attn2.to_k.lora.down" in k else v)
           for k, v in sd2.items()}
    save_file(sd1, str(tmp_path / "sd1.safetensors"))
    save_file({"unet.mid_block.foo.to_q.lora.down.weight": torch.zeros(4, 64), "unet.mid_block.foo.to_q.lora.up.weight": torch.zeros(64, 4)},
              str(tmp_path / "unknown.safetensors"))
    save_file({"model.diffusion_model.input_blocks.0.0.weight": torch.zeros(4, 4)}, str(tmp_path / "notlora.safetensors"))
    save_file({"text_encoder.text_model.encoder.layers.0.self_attn.q_proj.lora_A.weight": torch.zeros(4, 32)},
              str(tmp_path / "te_only.safetensors"))
    (tmp_path / "broken.safetensors").write_bytes(b"\x00" * 20)
    cases = {
        "empty": "has no pytorch_lora_weights.safetensors",
        "pickled": "cannot be read as a torch pickle",
        "pickled/pytorch_lora_weights.bin": "cannot be read as a torch pickle",
        "model.ckpt": "cannot be read as a torch pickle",
        "notes.txt": "is not a .safetensors file",
        "sd2.safetensors": "seems made for SD 2.x (cross_attention_dim=1024, first width 320)",
        "sd1.safetensors": "seems made for SD 1.x (cross_attention_dim=768",
        "unknown.safetensors": "match no layer of this UNet",
        "notlora.safetensors": "unknown keys",
        "te_only.safetensors": "holds no UNet weights",
        "broken.safetensors": "cannot be read as safetensors",
        "missing": "does not exist",
        ".": "several .safetensors files",
    }
    for rel, msg in cases.items():
        with pytest.raises(InputError) as e:
            load_lora(pipe, tmp_path / rel)
        text = str(e.value)
        assert msg in text, (rel, text)
        assert "\n" not in text
        if rel not in ("missing",): assert str(tmp_path / rel).rstrip("/.") in text or str(tmp_path) in text, text
    assert adapter_names(pipe) == []      # nothing half-loaded
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelNotAvailableError, match="not in the local cache"):
        load_lora(pipe, "nobody-here/no-such-lora")


def test_bad_arguments(trained, tmp_path):
    pipe = trained["pipe"]
    names = adapter_names(pipe)
    for kw, msg in [(dict(rank=0), "rank=0"), (dict(steps=0), "steps=0"), (dict(lr=-1), "lr=-1"), (dict(alpha=0), "alpha=0"),
                    (dict(target_modules=("to_x",)), "match no Linear"), (dict(name="a.b"), "not a valid adapter name"),
                    (dict(name="stripes"), "already loaded"), (dict(checkpoint_every=2), "need save_to"),
                    (dict(resume=True), "need save_to"), (dict(save_to=trained["tmp"] / "stripes"), "already holds"),
                    (dict(save_to=tmp_path / "no" / "where"), "does not exist"), (dict(prompt=None), "must be a string")]:
        args = dict(pipe=pipe, style_image=stripes(), prompt=PROMPT, steps=2, progress=False); args.update(kw)
        with pytest.raises(InputError, match=msg.replace(".", r"\.")):
            train_lora(**args)
    with pytest.raises(InputError, match="does not exist"):
        train_lora(pipe, tmp_path / "none.png", PROMPT, steps=2, progress=False)
    assert adapter_names(pipe) == names


def test_loss_is_eq3_epsilon_and_v_prediction():
    "The first recorded loss (LoRA B = 0, so the base UNet) equals eq. 3 computed by hand with the same draws."
    from diffusers import DDIMScheduler
    for pred in ("epsilon", "v_prediction"):
        pipe = tiny_pipeline(0)
        pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config, prediction_type=pred)
        s = train_lora(pipe, stripes(), PROMPT, rank=4, steps=1, seed=5, progress=False)
        z0 = encode_image(pipe, prepare_image(stripes(), 64)[0])
        g = torch.Generator().manual_seed(5)
        noise = torch.randn(z0.shape, generator=g); t = torch.randint(0, 1000, (1,), generator=g)
        ab = pipe.scheduler.alphas_cumprod[t]
        zt = ab.sqrt() * z0 + (1 - ab).sqrt() * noise
        target = noise if pred == "epsilon" else ab.sqrt() * noise - (1 - ab).sqrt() * z0
        with torch.no_grad(), use_adapter(pipe, None):
            want = F.mse_loss(pipe.unet(zt, t, encode_text(pipe, PROMPT)).sample, target).item()
        assert abs(s.loss_history[0] - want) < 1e-5, (pred, s.loss_history[0], want)


def test_same_seed_same_lora_and_progress_bar(capsys):
    pipe = tiny_pipeline(0)
    a = train_lora(pipe, stripes(), PROMPT, rank=4, steps=3, lr=1e-2, progress=True)
    b = train_lora(pipe, stripes(), PROMPT, rank=4, steps=3, lr=1e-2, progress=False)
    assert (a.name, b.name) == ("style", "style_2")
    assert a.loss_history == b.loss_history
    assert torch.equal(out(pipe, a.name), out(pipe, b.name))
    assert "loss=" in capsys.readouterr().err


def test_bfloat16_pipeline_trains_in_float32_and_returns_to_bfloat16():
    pipe = tiny_pipeline(0).to(dtype=torch.bfloat16)
    before = base_state(pipe.unet)
    s = train_lora(pipe, stripes(), PROMPT, rank=4, steps=2, lr=1e-2, progress=False)
    assert all(np.isfinite(s.loss_history))
    params = _adapter_params(pipe.unet, s.name)
    assert params and all(p.dtype == torch.bfloat16 and not p.requires_grad for p in params)
    now = base_state(pipe.unet)
    assert all(torch.equal(v, now[k]) for k, v in before.items())


CHILD = textwrap.dedent("""
    import sys, time, torch
    sys.path.insert(0, {root!r}); torch.set_num_threads(1)
    import numpy as np
    import diffstyler.lora as L
    from diffstyler.models import tiny_pipeline
    y, x = np.mgrid[:64, :64]
    img = np.array(((230, 60, 40), (30, 40, 200)), dtype=np.uint8)[((x + y) // 8) % 2]
    real_save, calls = L.save_file, [0]
    def slow_save(tensors, path, metadata=None):      # stall inside the 2nd checkpoint, between its files
        real_save(tensors, path, metadata=metadata)
        if path.endswith({state!r}):
            calls[0] += 1
            if calls[0] == 2: print("WRITING", flush=True); time.sleep(60)
    L.save_file = slow_save
    L.train_lora(tiny_pipeline(0), img, {prompt!r}, rank=4, steps=10000, lr=1e-2, save_to={folder!r},
                 checkpoint_every=3, progress=False)
""")


def _interrupted_run(folder: Path, sig) -> subprocess.Popen:
    code = CHILD.format(root=str(ROOT), state=STATE_NAME, prompt=PROMPT, folder=str(folder))
    return subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "HF_HUB_OFFLINE": "1"})


def _check_interrupted(folder: Path):
    names = sorted(q.name for q in folder.iterdir())
    assert names == ["checkpoint-000003"], names          # no final file, no temp leftovers, no half-written checkpoint
    ck = folder / "checkpoint-000003"
    assert sorted(q.name for q in ck.iterdir()) == sorted([WEIGHT_NAME, INFO_NAME, STATE_NAME])
    assert json.loads((ck / INFO_NAME).read_text())["steps"] == 3


def test_sigterm_mid_checkpoint_leaves_no_partial_file(tmp_path):
    "A real process, killed with SIGTERM while it writes its 2nd checkpoint."
    folder = tmp_path / "run"
    p = _interrupted_run(folder, signal.SIGTERM)
    deadline, line = time.time() + 300, ""
    while time.time() < deadline and "WRITING" not in line:
        line = p.stdout.readline()
        if not line and p.poll() is not None: break
    assert "WRITING" in line, p.stderr.read()[-2000:]
    p.send_signal(signal.SIGTERM)
    assert p.wait(timeout=120) != 0
    assert "KeyboardInterrupt" in p.stderr.read()           # our handler turned it into an interrupt: cleanup ran
    _check_interrupted(folder)


def test_ctrl_c_mid_checkpoint_then_resume(tmp_path, monkeypatch):
    "Ctrl-C (KeyboardInterrupt) inside the 2nd checkpoint write; then resume gives what an uninterrupted run gives."
    import diffstyler.lora as L
    folder, calls, real = tmp_path / "run", [0], L.save_file
    def interrupting_save(tensors, path, metadata=None):
        real(tensors, path, metadata=metadata)
        if path.endswith(STATE_NAME):
            calls[0] += 1
            if calls[0] == 2: raise KeyboardInterrupt
    monkeypatch.setattr(L, "save_file", interrupting_save)
    pipe = tiny_pipeline(0)
    with pytest.raises(KeyboardInterrupt):
        train_lora(pipe, stripes(), PROMPT, rank=4, steps=100, lr=1e-2, save_to=folder, checkpoint_every=3, progress=False)
    monkeypatch.setattr(L, "save_file", real)
    _check_interrupted(folder)
    assert adapter_names(pipe) == []                      # the interrupted run took its adapter with it
    with pytest.raises(InputError, match="holds only training checkpoints"):
        load_lora(pipe, folder)
    # the checkpoint is a complete LoRA on its own, and resume continues from it
    ck = load_lora(pipe, folder / "checkpoint-000003")
    assert ck.steps == 3
    r = train_lora(pipe, stripes(), PROMPT, rank=4, steps=7, lr=1e-2, save_to=folder, checkpoint_every=3, resume=True, progress=False)
    assert len(r.loss_history) == 7 and r.loss_history[:3] == ck.loss_history
    assert sorted(q.name for q in folder.iterdir()) == ["checkpoint-000006", INFO_NAME, WEIGHT_NAME]
    straight = train_lora(pipe, stripes(), PROMPT, rank=4, steps=7, lr=1e-2, progress=False)
    assert r.loss_history == straight.loss_history
    assert torch.equal(out(pipe, r.name), out(pipe, straight.name))
    # resuming a finished run does no more steps; resuming with other settings or another image is refused
    again = train_lora(pipe, stripes(), PROMPT, rank=4, steps=6, lr=1e-2, save_to=folder, resume=True, progress=False)
    assert again.loss_history == r.loss_history[:6]
    with pytest.raises(InputError, match="was made with image_sha256"):
        train_lora(pipe, checks(), PROMPT, rank=4, steps=7, lr=1e-2, save_to=folder, resume=True, progress=False)
    other = tmp_path / "other"; (other / "checkpoint-000003").mkdir(parents=True)
    with pytest.raises(InputError, match="holds checkpoints of an earlier run"):
        train_lora(pipe, stripes(), PROMPT, rank=4, steps=7, save_to=other, progress=False)
