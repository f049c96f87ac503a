"""Issue 19: injected steps skip the ResNet branches injection overwrites, K styles run as one UNet call, adapters switch in O(1).

Each optimisation is checked against the computation it replaces (same numbers to float round-off) and for the work it
removes (calls counted, no walk of the UNet); the speed figures are in bench/compute.py."""
from collections import Counter
import numpy as np
import pytest
import torch
import diffstyler as ds
from diffstyler.hooks import InjectedResnet, decoder_layers
from diffstyler.lora import use_adapter
from diffstyler.inversion import record_all

STEPS, INV = 6, 30


def random_lora(unet, name, seed, targets=("to_q", "to_k", "to_v")):
    "A LoRA with random A and B (peft's default init leaves B = 0, which would change nothing)."
    from peft import LoraConfig
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        unet.add_adapter(LoraConfig(r=4, lora_alpha=4, target_modules=list(targets), init_lora_weights="gaussian"), adapter_name=name)
        with torch.no_grad():
            for n, p in unet.named_parameters():
                if f".lora_B.{name}." in n: p.normal_(0, 0.05)
    return name


@pytest.fixture(scope="module")
def tiny():
    pipe = ds.load_pipeline("tiny")
    for k in range(4): random_lora(pipe.unet, f"s{k}", k + 1)
    styler = ds.DiffStyler(pipe)
    rng = np.random.default_rng(5)
    from PIL import Image
    content = Image.fromarray(np.kron(rng.integers(0, 255, (8, 8, 3)), np.ones((8, 8, 1))).astype(np.uint8))
    return styler, styler.invert(content, INV, STEPS, progress=False)


def strips(k, n=8):
    "k vertical strips covering the latent: one mask per style."
    ms = []
    for j in range(k):
        m = torch.zeros(n, n); m[:, j * n // k:(j + 1) * n // k] = 1; ms.append(m)
    return ms


def old_feature_path(self, input_tensor, temb=None, *args, **kwargs):
    "The feature hook before issue 19: the whole ResNet runs and its conv2 output is replaced afterwards (a forward hook)."
    c = self.controller
    if not c.wants("feature", self.layer): return self.original(input_tensor, temb, *args, **kwargs)
    def hook(module, a, h):
        rows = c.branch_rows(self.layer, h.shape[0])
        return c.feature(self.layer, h if rows is None else h[rows], h.shape[0], h)
    handle = self.resnet.conv2.register_forward_hook(hook)
    try: return self.original(input_tensor, temb, *args, **kwargs)
    finally: handle.remove()


PRESETS = {"paper": lambda: ds.InjectionConfig.paper(num_steps=STEPS),
           "official": lambda: ds.InjectionConfig.official(num_steps=STEPS),
           "official_2024_pinned": lambda: ds.InjectionConfig.official_2024(num_steps=STEPS, pinned_lora=True),
           "paper_noise_fusion": lambda: ds.InjectionConfig.paper(num_steps=STEPS, fusion="noise", base_steps=2),
           "paper_no_cfg": lambda: ds.InjectionConfig.paper(num_steps=STEPS, guidance_scale=1.0)}


@pytest.mark.parametrize("preset", list(PRESETS))
def test_skipped_branches_give_the_same_transfer(tiny, preset, monkeypatch):
    "Not computing the overwritten ResNet branches changes nothing (max |diff| <= 1e-5), and those branches are not run."
    styler, source = tiny
    cfg = PRESETS[preset]()
    kw = dict(styles=[("s0", strips(2)[0], "red"), ("s1", strips(2)[1], "blue")], config=cfg, progress=False)
    rows = Counter()
    hs = [L.resnet.conv1.register_forward_hook(lambda m, a, o, i=L.index: rows.update({i: a[0].shape[0]})) for L in styler.layers]
    try: new = styler.transfer(source, **kw)
    finally:
        for h in hs: h.remove()
    monkeypatch.setattr(InjectedResnet, "__call__", old_feature_path)
    old = styler.transfer(source, **kw)
    d = (new.latents - old.latents).abs().max().item()
    print(f"{preset}: max |skipped - computed then replaced| = {d:.1e}")
    assert d <= 1e-5
    # rows through each decoder ResNet's conv1 over the run, against what a run without the skip pushes through
    per_call = 4 if cfg.guidance_scale != 1 else 2                      # two styles, [uncond, cond] each
    if cfg.source == "lora": per_call += 2                              # a source row per style
    base_calls = STEPS if cfg.fusion == "noise" else 0                  # the base pass of noise fusion (3 rows in-batch)
    base_rows = per_call // 2
    full = STEPS * per_call + base_calls * base_rows
    for layer in range(12):
        style_steps = sum(cfg.injects_feature(layer, i) for i in range(STEPS))
        base_cfg = cfg.replace(feature_steps=cfg.base_steps)
        base_steps = sum(base_cfg.injects_feature(layer, i) for i in range(STEPS)) if base_calls else 0
        if cfg.source == "lora": want = full   # in-batch: every row computes its branch (see InjectionController.branch_rows)
        else: want = full - style_steps * per_call - base_steps * base_rows   # from the cache: no row does
        assert rows[layer] == want, (layer, rows[layer], want)


@pytest.mark.parametrize("preset", list(PRESETS))
@pytest.mark.parametrize("k", [1, 2, 3])
def test_styles_in_one_call_equal_the_loop(tiny, preset, k):
    "K masked styles as one UNet call per step = one call per style (<= 1e-4), probes included; the calls are counted."
    styler, source = tiny
    cfg = PRESETS[preset]()
    styles = [(f"s{j}", m, f"style {j}") for j, m in enumerate(strips(k))] if k > 1 else [("s0", None, "style 0")]
    batches = {}
    runs = {}
    for batched in (True, False):
        seen = []
        h = styler.pipe.unet.register_forward_pre_hook(lambda m, a: seen.append(a[0].shape[0]))
        try: runs[batched] = styler.transfer(source, styles=styles, config=cfg, progress=False, batch_styles=batched,
                                             probe=record_all(styler.pipe.unet, STEPS))
        finally: h.remove()
        batches[batched] = seen
    d = (runs[True].latents - runs[False].latents).abs().max().item()
    dp = max((runs[True].probes[j].data[key] - runs[False].probes[j].data[key]).abs().max().item()
             for j in range(k) for key in runs[False].probes[j].data)
    print(f"{preset}, K={k}: max |one call - loop| latents {d:.1e}, probes {dp:.1e}")
    assert d <= 1e-4 and dp <= 1e-4
    rows = (2 if cfg.guidance_scale != 1 else 1) + (cfg.source == "lora")
    base = [rows] if cfg.fusion == "noise" and k > 1 else []
    assert batches[True] == ([k * rows] + base) * STEPS
    assert batches[False] == ([rows] * k + base) * STEPS
    # the blocks really ran different adapters (else one call could not be told from K calls of one adapter)
    last = (STEPS - 1, 11, "self_q")   # past every injection: each style's own Q
    for j in range(1, k): assert (runs[True].probes[0].data[last] - runs[True].probes[j].data[last]).abs().max() > 1e-3


def test_one_adapter_per_block_matches_separate_calls(tiny):
    styler, _ = tiny
    unet = styler.pipe.unet
    g = torch.Generator().manual_seed(0)
    z, emb = torch.randn(2, 4, 8, 8, generator=g), torch.randn(2, 77, unet.config.cross_attention_dim, generator=g)
    with torch.no_grad():
        with use_adapter(unet, ["s0", None, "s2"]): both = unet(z.repeat(3, 1, 1, 1), 400, encoder_hidden_states=emb.repeat(3, 1, 1)).sample
        one = []
        for n in ("s0", None, "s2"):
            with use_adapter(unet, n): one.append(unet(z, 400, encoder_hidden_states=emb).sample)
        with use_adapter(unet, "s0", merged=False): lora_path = unet(z, 400, encoder_hidden_states=emb).sample
    assert (both - torch.cat(one)).abs().max() <= 1e-5
    assert (one[0] - one[1]).abs().max() > 1e-3 and (one[0] - one[2]).abs().max() > 1e-3
    assert (one[0] - lora_path).abs().max() <= 1e-4          # merged = peft's LoRA path, to round-off
    with torch.no_grad(), use_adapter(unet, ["s0", "s1"]):
        with pytest.raises(ds.InputError, match="equal blocks"): unet(z[:1].repeat(3, 1, 1, 1), 400, encoder_hidden_states=emb[:1].repeat(3, 1, 1))


def test_switching_never_walks_the_unet_and_nests(tiny):
    "Inside a block, select() switches without visiting the UNet's modules; nested blocks restore the outer selection."
    styler, _ = tiny
    unet = styler.pipe.unet
    z, emb = torch.randn(1, 4, 8, 8), torch.randn(1, 77, unet.config.cross_attention_dim)
    run = lambda: unet(z, 400, encoder_hidden_states=emb).sample
    with torch.no_grad():
        with use_adapter(unet, "s1"): want1 = run()
        with use_adapter(unet, None): want0 = run()
        with use_adapter(unet, "s0") as bank:
            w1, w0 = bank.weights("s1"), bank.weights(None)
            unet.modules = unet.named_modules = lambda *a, **k: (_ for _ in ()).throw(AssertionError("walked"))
            try:
                bank.select(w1); assert torch.equal(run(), want1)
                bank.select(w0); assert torch.equal(run(), want0)
            finally: del unet.modules, unet.named_modules
            bank.select(bank.weights("s0")); outer = run()
            with use_adapter(unet, None): assert torch.equal(run(), want0)
            assert torch.equal(run(), outer)
    assert getattr(unet, "_ds_bank", None) is None
    bases = [m.get_base_layer() for m in unet.modules() if hasattr(m, "lora_A")]
    assert bases and not any("forward" in vars(b) for b in bases)
