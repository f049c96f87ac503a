"""Review of issue 19 (skipped ResNet branches, AdapterBank, K styles in one call, preset-driven cache): a user's edge cases.

Each test states the behaviour a user can rely on; the tiny random pipeline and random LoRAs as in tests/test_compute.py."""
import numpy as np
import pytest
import torch
from PIL import Image
import diffstyler as ds
from diffstyler.lora import use_adapter, save_lora
from diffstyler.inversion import SourceTrajectory
from test_compute import random_lora, strips   # one copy of each helper (tests/ is on sys.path)

STEPS, INV = 4, 4



def content_image():
    rng = np.random.default_rng(5)
    return Image.fromarray(np.kron(rng.integers(0, 255, (8, 8, 3)), np.ones((8, 8, 1))).astype(np.uint8))


@pytest.fixture(scope="module")
def tiny():
    pipe = ds.load_pipeline("tiny")
    for k in range(2): random_lora(pipe.unet, f"s{k}", k + 1)
    styler = ds.DiffStyler(pipe)
    return styler, styler.invert(content_image(), INV, STEPS, progress=False)   # the default: what the paper preset reads


def leftovers(unet):
    "Names of modules that still carry an instance-level forward (a stand-in left behind), and the bank attribute."
    return [n for n, m in unet.named_modules() if "forward" in vars(m)], getattr(unet, "_ds_bank", None)


@pytest.mark.parametrize("batch_styles", [True, False])
@pytest.mark.parametrize("bad", [0, 1])
def test_every_style_adapter_is_checked(tiny, batch_styles, bad):
    """An adapter name that is not loaded, in ANY of the styles, is a one-line InputError naming it (before issue 19 each
    style's `use_adapter` checked it). Now only styles[0] is checked: a typo in styles[1] silently renders the base UNet
    in that mask (AdapterBank.weights treats an unknown name as 'no LoRA in this layer')."""
    styler, source = tiny
    styles = [("s0", strips(2)[0], "a"), ("s1", strips(2)[1], "b")]
    styles[bad] = ("nope", styles[bad][1], styles[bad][2])
    with pytest.raises(ds.InputError, match="nope"):
        styler.transfer(source, styles=styles, progress=False, batch_styles=batch_styles)
    assert leftovers(styler.pipe.unet) == ([], None)


def test_deleted_lora_of_a_second_style_is_refused(tiny):
    "A StyleLoRA-like name whose adapter was deleted since (delete_lora) must not silently style with the base UNet."
    styler, source = tiny
    unet = styler.pipe.unet
    random_lora(unet, "gone", 9)
    ds.lora.delete_lora(unet, "gone")
    with pytest.raises(ds.InputError, match="gone"):
        styler.transfer(source, styles=[("s0", strips(2)[0], "a"), ("gone", strips(2)[1], "b")], progress=False)


@pytest.mark.parametrize("preset", ["paper", "official"])
def test_interrupt_mid_transfer_leaves_the_unet_as_it_was(tiny, preset):
    "KeyboardInterrupt from a callback at step 2 of a 2-style batched transfer: no stand-in forward, bank or processor stays; the UNet computes as before."
    styler, source = tiny
    unet = styler.pipe.unet
    z, emb = torch.randn(1, 4, 8, 8), torch.randn(1, 77, unet.config.cross_attention_dim)
    with torch.no_grad(): before = unet(z, 400, encoder_hidden_states=emb).sample
    procs = {k: type(v) for k, v in unet.attn_processors.items()}
    def stop(i, z):
        if i == 1: raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        styler.transfer(source, styles=[("s0", strips(2)[0], "a"), ("s1", strips(2)[1], "b")],
                        config=ds.InjectionConfig.preset(preset, STEPS), progress=False, callback=stop)
    assert leftovers(unet) == ([], None)
    assert {k: type(v) for k, v in unet.attn_processors.items()} == procs
    with torch.no_grad(): assert torch.equal(unet(z, 400, encoder_hidden_states=emb).sample, before)


def test_transfer_inside_a_users_adapter_block(tiny):
    "A transfer run inside the user's own `with use_adapter(pipe, 's1')` (autograd on: peft's path) gives the same result, and the block is intact after."
    styler, source = tiny
    unet = styler.pipe.unet
    kw = dict(styles=[("s0", strips(2)[0], "a"), ("s1", strips(2)[1], "b")], progress=False)
    want = styler.transfer(source, **kw).latents
    z, emb = torch.randn(1, 4, 8, 8), torch.randn(1, 77, unet.config.cross_attention_dim)
    with use_adapter(styler.pipe, "s1"):
        with torch.no_grad(): inside_before = unet(z, 400, encoder_hidden_states=emb).sample
        got = styler.transfer(source, **kw).latents
        with torch.no_grad(): inside_after = unet(z, 400, encoder_hidden_states=emb).sample
    assert (got - want).abs().max() <= 1e-6
    assert torch.equal(inside_before, inside_after)
    assert leftovers(unet) == ([], None)


def test_bf16_unet_batched_styles_equal_the_loop():
    "A bfloat16 UNet on the CPU: K styles in one call = one call per style (merged weights kept in the UNet's dtype)."
    pipe = ds.load_pipeline("tiny")
    for k in range(2): random_lora(pipe.unet, f"s{k}", k + 1)
    styler = ds.DiffStyler(pipe)
    source = styler.invert(content_image(), INV, STEPS, progress=False)
    pipe.unet.to(torch.bfloat16)
    kw = dict(styles=[("s0", strips(2)[0], "a"), ("s1", strips(2)[1], "b")], progress=False)
    a, b = (styler.transfer(source, batch_styles=bs, **kw).latents for bs in (True, False))
    assert torch.isfinite(a).all() and (a - b).abs().max() <= 1e-2
    assert {p.dtype for p in pipe.unet.parameters()} == {torch.bfloat16}
    assert leftovers(pipe.unet) == ([], None)


def test_saved_paper_cache_with_other_thresholds_says_what_to_do(tiny, tmp_path):
    "A trajectory recorded for the paper preset, saved and loaded, then used past its thresholds: one line naming what is missing and record='all'."
    styler, source = tiny
    path = source.save(tmp_path / "src.safetensors")
    loaded = SourceTrajectory.load(path)
    assert loaded.recorded.name == "paper" and set(loaded.store.data) == set(source.store.data)
    with pytest.raises(ds.InputError) as e:
        styler.transfer(loaded, style="s0", config=ds.InjectionConfig.paper(STEPS).replace(feature_steps=STEPS), progress=False)
    msg = str(e.value)
    assert "\n" not in msg and "'paper'" in msg and "feature" in msg and "record='all'" in msg
    assert leftovers(styler.pipe.unet) == ([], None)


def test_explorer_past_the_recorded_cache_says_record_all(tiny):
    "The threshold explorer on a default (paper-only) cache: sliding past the paper's thresholds shows a status naming record='all', no traceback."
    pytest.importorskip("ipywidgets")
    from diffstyler.widgets import InjectionExplorer
    styler, source = tiny
    ex = InjectionExplorer(styler, source, style="s0", prompt="x")
    assert ex.result is not None
    ex.feature_steps.value = source.num_steps
    assert "cannot render" in ex.status.value and "record='all'" in ex.status.value
    assert leftovers(styler.pipe.unet) == ([], None)


def test_cli_transfer_past_a_paper_cache_speaks_cli(tmp_path, capsys):
    """`diffstyler invert --record paper` then `diffstyler transfer SRC --feature-steps N` beyond the paper's: the error must tell
    a command-line user what to run (`--record all`), not the Python keyword `record='all'` / `record=<this config>`."""
    from diffstyler.cli import main
    pipe = ds.load_pipeline("tiny")
    random_lora(pipe.unet, "s0", 1)
    save_lora(pipe, "s0", tmp_path / "lora")
    content_image().save(tmp_path / "c.png")
    src = tmp_path / "src.safetensors"
    assert main(["invert", str(tmp_path / "c.png"), "--model", "tiny", "--out", str(src), "--inversion-steps", str(INV),
                 "--steps", str(STEPS), "--record", "paper", "--quiet"]) == 0
    capsys.readouterr()
    rc = main(["transfer", str(src), "--model", "tiny", "--lora", str(tmp_path / "lora"), "--out", str(tmp_path / "o.png"),
               "--feature-steps", str(STEPS), "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2
    assert "--record all" in err and "record=<this config>" not in err


def test_accelerate_hook_on_a_resnet_sees_every_call():
    """`hooked` says a forward another library installed on a decoder ResNet (accelerate's `add_hook_to_module`, e.g. a
    device_map dispatch hook that moves inputs to the ResNet's device) "is kept and called". Before issue 19 it always ran
    (features were swapped by a conv2 forward hook); now `InjectedResnet` bypasses it at every recorded or injected step
    (layers 4-11 of the paper preset), so its pre_forward is skipped. Every UNet call must pass through it, and the
    transfer must not change."""
    from accelerate.hooks import ModelHook, add_hook_to_module, remove_hook_from_module
    pipe = ds.load_pipeline("tiny")
    random_lora(pipe.unet, "s0", 1)
    styler = ds.DiffStyler(pipe)
    source = styler.invert(content_image(), INV, STEPS, progress=False)
    want = styler.transfer(source, style="s0", prompt="x", progress=False).latents

    class Count(ModelHook):
        def __init__(self): super().__init__(); self.n = 0
        def pre_forward(self, module, *args, **kwargs): self.n += 1; return args, kwargs
    counts = {}
    for L in styler.layers: counts[L.index] = Count(); add_hook_to_module(L.resnet, counts[L.index])
    calls = []
    h = pipe.unet.register_forward_pre_hook(lambda m, a: calls.append(1))
    try: got = styler.transfer(source, style="s0", prompt="x", progress=False).latents
    finally:
        h.remove()
        for L in styler.layers: remove_hook_from_module(L.resnet)
    assert {i: c.n for i, c in counts.items()} == {L.index: len(calls) for L in styler.layers}
    assert (got - want).abs().max() <= 1e-5
