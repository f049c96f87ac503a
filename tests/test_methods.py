"""Issue 17: Plug-and-Play, StyleID and MasaCtrl as presets of the one controller, against independent loops.

Each reference below is written from the method's public code (cited per function) and shares nothing with our hooks,
controller or transfer loop: like the originals, it runs the source images' rows *in the same batch* as the output and
copies their tensors inside its own attention processors and a conv2 forward hook, with the thresholds written as the
methods' code computes them. Our presets read the same tensors from the cached source pass instead. Same tiny UNet, same
start latent (`src.inverted[:1]`): the final latents must agree to 1e-4.

The source rows at step i are the DDIM-inversion latents `src.inverted[i]`, as in the methods' own code: pnp-diffusers
pnp.py `load_source_latents_t` (saved by preprocess.py's inversion), MasaCtrl diffuser_utils.py
`ref_intermediate_latents[-1 - i]` (from `invert(..., return_intermediates=True)`), StyleID run_styleid.py (q, k, v saved
in `encode_ddim`'s callback). Our presets say so with `source_latents='inversion'`: the cache holds what the UNet computes
on those latents (`inversion_pass`), not on the reconstruction (DiffStyler's source pass). The two differ by 0.03 to 0.12 in
the final latents on this pipeline (50 inversion steps), so these tests also pin which trajectory the tensors come from.
"""
import numpy as np
import pytest
import torch
from PIL import Image
from diffusers import DDIMScheduler
import diffstyler as ds
from diffstyler.core import InjectionConfig, Rule
from diffstyler.inversion import cache_keys, record_all

N = 50          # the methods' own step count, so that their thresholds need no scaling
LAYER4 = (1, 1)                                   # up_blocks[1].resnets[1]: decoder layer 4
ATTN = {k: (k // 3, k % 3) for k in range(3, 12)}   # decoder layer k -> up_blocks[k // 3].attentions[k % 3]


@pytest.fixture(scope="module")
def setup():
    pipe = ds.load_pipeline("tiny")
    styler = ds.DiffStyler(pipe)
    rng = np.random.default_rng(3)
    img = lambda: Image.fromarray(np.kron(rng.integers(0, 255, (8, 8, 3)), np.ones((8, 8, 1))).astype(np.uint8))
    content, style = img(), img()
    rec = ["all", "pnp", "styleid", "masactrl"]
    src = styler.invert(content, N, N, record=rec, progress=False)
    sty = styler.invert(style, N, N, record=rec, progress=False)
    return styler, src, sty


# ---- the reference: one batch holding the source rows and the output rows ------------------------------------------
class RefAttn:
    "Self-attention written out; `edit(q, k, v, step)` may rewrite the output rows from the source rows (in place); the output rows' logits are multiplied by `temperature(step)`."
    def __init__(self, state, edit, temperature=lambda step: 1.0):
        self.state, self.edit, self.temperature = state, edit, temperature

    def __call__(self, attn, x, encoder_hidden_states=None, attention_mask=None, temb=None, **kw):
        q, k, v = attn.to_q(x), attn.to_k(x), attn.to_v(x)
        self.edit(q, k, v, self.state["step"])
        q[self.state["n_src"]:] *= self.temperature(self.state["step"])   # the output rows' logits x T (the source rows stay plain)
        q, k, v = (attn.head_to_batch_dim(y) for y in (q, k, v))
        logits = torch.einsum("b i d, b j d -> b i j", q, k) * attn.scale
        out = torch.einsum("b i j, b j d -> b i d", logits.softmax(-1), v)
        return attn.to_out[1](attn.to_out[0](attn.batch_to_head_dim(out)))


def run_reference(styler, rows, texts, z, edit_attn, layers, guidance, feature_until=0, temperature=lambda s: 1.0):
    """Denoise `z` with DDIM for N steps; each UNet call's batch is [source rows at step i (`rows(i)`), output rows];
    `edit_attn(q, k, v, step, n_src)` rewrites output rows of self-attention in `layers`; decoder layer 4's conv2 output of
    the output rows becomes the first source row's while step < feature_until (PnP). Guidance over [uncond, cond]."""
    pipe = styler.pipe; unet = pipe.unet
    sched = DDIMScheduler.from_config(pipe.scheduler.config); sched.set_timesteps(N)
    emb = lambda t: pipe.text_encoder(pipe.tokenizer(t, padding="max_length", max_length=pipe.tokenizer.model_max_length,
                                                     return_tensors="pt").input_ids)[0]
    state = {"step": 0}
    procs = dict(unet.attn_processors)
    mine = {}
    for l in layers:
        b, a = ATTN[l]
        mine[f"up_blocks.{b}.attentions.{a}.transformer_blocks.0.attn1.processor"] = RefAttn(state, lambda q, k, v, s: edit_attn(q, k, v, s, state["n_src"]), temperature)
    unet.set_attn_processor({**procs, **mine})

    def conv2_hook(module, args, h):
        if state["step"] < feature_until:
            h = h.clone(); h[state["n_src"]:] = h[:1]
        return h
    handle = unet.up_blocks[LAYER4[0]].resnets[LAYER4[1]].conv2.register_forward_hook(conv2_hook)
    try:
        with torch.no_grad():
            cond = emb(texts)
            for i, t in enumerate(sched.timesteps):
                state["step"] = i
                src_rows = rows(i); state["n_src"] = src_rows.shape[0]
                n_out = cond.shape[0] - state["n_src"]
                x = torch.cat([src_rows, z.expand(n_out, -1, -1, -1)])
                e = unet(x, t, encoder_hidden_states=cond).sample[state["n_src"]:]
                e = e[:1] + guidance * (e[1:2] - e[:1]) if n_out == 2 else e
                z = sched.step(e, t, z).prev_sample
    finally:
        handle.remove(); unet.set_attn_processor(procs)
    return z


def pnp_edit(q, k, v, step, n_src):
    "pnp-diffusers pnp_utils.py: the source's self-attention Q and K into every other row, for timesteps[:int(0.5 * 50)]."
    if step < int(0.5 * N): q[n_src:] = q[:1]; k[n_src:] = k[:1]


def masactrl_edit(q, k, v, step, n_src):
    "MasaCtrl masactrl.py: from step 4 on, the output's queries attend to the source's keys and values."
    if step >= 4: k[n_src:] = k[:1]; v[n_src:] = v[:1]


def styleid_edit(q, k, v, step, n_src):
    "StyleID ldm attention.py: q = 0.75 q_content + 0.25 q_output; K, V the style's (rows: content, style, output)."
    q[2:] = 0.75 * q[:1] + 0.25 * q[2:]; k[2:] = k[1:2]; v[2:] = v[1:2]


def test_pnp_matches_its_loop(setup):
    styler, src, _ = setup
    prompt = "checker style, a red square"
    ours = styler.transfer(src, prompt=prompt, config=InjectionConfig.preset("pnp", N), progress=False).latents
    neg = "ugly, blurry, black, low res, unrealistic"
    ref = run_reference(styler, lambda i: src.inverted[i:i + 1], ["", neg, prompt], src.inverted[:1], pnp_edit, range(4, 12), 7.5,
                        feature_until=int(0.8 * N))
    assert (ours - ref).abs().max() < 1e-4
    plain = styler.transfer(src, prompt=prompt, config=InjectionConfig(feature_steps=0, attention_steps=0), progress=False).latents
    assert (ours - plain).abs().max() > 1e-2   # the injection did something


def test_masactrl_matches_its_loop(setup):
    styler, src, _ = setup
    prompt = "checker style, a red square"
    ours = styler.transfer(src, prompt=prompt, config=InjectionConfig.preset("masactrl", N), progress=False).latents
    ref = run_reference(styler, lambda i: src.inverted[i:i + 1], ["", "", prompt], src.inverted[:1], masactrl_edit, range(6, 12), 7.5)
    assert (ours - ref).abs().max() < 1e-4


def test_styleid_matches_its_loop(setup):
    styler, src, sty = setup
    ours = styler.transfer(src, config=InjectionConfig.preset("styleid", N), style_source=sty, progress=False).latents
    zc, zs = src.inverted[:1], sty.inverted[:1]   # AdaIN, per channel over the spatial dims (run_styleid.py)
    z0 = (zc - zc.mean((2, 3), keepdim=True)) / zc.std((2, 3), keepdim=True) * zs.std((2, 3), keepdim=True) + zs.mean((2, 3), keepdim=True)
    ref = run_reference(styler, lambda i: torch.cat([src.inverted[i:i + 1], sty.inverted[i:i + 1]]), ["", "", ""], z0, styleid_edit,
                        range(6, 12), 1.0, temperature=lambda s: 1.5)
    assert (ours - ref).abs().max() < 1e-4


def test_styleid_with_full_query_preservation_is_the_reconstruction(setup):
    """gamma = 1 and no K/V injection (no AdaIN, T = 1): the output's Q is the content's own, so the pass is plain DDIM. Exactly
    so with Q from our source pass (the reconstruction); StyleID's preset takes it from the inversion latents, which equal the
    reconstruction's only as far as the inversion is exact."""
    styler, src, sty = setup
    cfg = InjectionConfig.preset("styleid", N).replace(adain_init=False, attention_temperature=1.0, source_latents="reconstruction",
                                                       rules=(Rule("self_q", tuple(range(6, 12)), 0, N, weight=1.0),))
    out = styler.transfer(src, config=cfg, style_source=sty, progress=False).latents
    assert (out - src.latents[-1:]).abs().max() < 1e-4


@pytest.mark.parametrize("name", ["paper", "pnp", "styleid", "masactrl"])
def test_each_preset_touches_exactly_its_rules(setup, name):
    "Probe read-back: every recorded (step, layer, kind) of the styled pass equals the source's where the preset's rules say, and only there."
    styler, src, sty = setup
    cfg = InjectionConfig.preset(name, N)
    probe = record_all(styler.pipe.unet, N, values=True)
    res = styler.transfer(src, prompt="checker style, a red square", config=cfg, style_source=sty, progress=False, probe=probe)
    used = res.probes[0].data
    stores = {"content": src.store.data, "style": sty.store.data}
    touched = set()
    for (s, l, kind), x in used.items():
        r = cfg.rule(kind, l, 0 if s is None else s)
        key = ds.FeatureStore.key(s, l, cfg.cache_kind(kind))   # inversion-latent presets cache 'inv_' kinds
        same = {o: key in d and torch.allclose(x, d[key].expand_as(x), atol=1e-6) for o, d in stores.items()}
        if r is not None and r.weight == 1:
            assert same[r.source], (name, s, l, kind)
            touched.add(key)
        else:
            assert not same["content"] and not same["style"], (name, s, l, kind)
            if r is not None: touched.add(key)   # blended: not the source's (its weights are checked by the loops above)
    assert touched == set(cache_keys(cfg, N))   # every key the preset reads, and nothing else, was injected


def test_style_trajectory_saves_and_loads_like_the_content(setup, tmp_path):
    "The style image's trajectory is a SourceTrajectory: saved to one file and loaded back, it gives the same transfer."
    styler, src, sty = setup
    path = sty.save(tmp_path / "style.source.safetensors")
    back = ds.SourceTrajectory.load(path)
    cfg = InjectionConfig.preset("styleid", N)
    a = styler.transfer(src, config=cfg, style_source=sty, progress=False).latents
    b = styler.transfer(src, config=cfg, style_source=back, progress=False).latents
    assert torch.equal(a, b)


def test_style_source_errors_name_the_fix(setup):
    styler, src, sty = setup
    cfg = InjectionConfig.preset("styleid", N)
    with pytest.raises(ds.InputError, match="pass it as style_source="):
        styler.transfer(src, config=cfg, progress=False)
    short = styler.invert(Image.new("RGB", (64, 64), "gray"), 10, 10, record="styleid", progress=False)
    with pytest.raises(ds.InputError, match="invert the style image with num_steps=50"):
        styler.transfer(src, config=cfg, style_source=short, progress=False)
    bare = styler.invert(Image.new("RGB", (64, 64), "gray"), N, N, record="paper", progress=False)
    with pytest.raises(ds.InputError, match="style trajectory .* lacks .* self_k"):
        styler.transfer(src, config=cfg, style_source=bare, progress=False)


def test_a_style_picture_of_another_size_works(setup):
    "StyleID's keys and values may come from a style picture of another shape: attention takes any number of tokens."
    styler, src, _ = setup
    wide = Image.fromarray(np.kron(np.random.default_rng(9).integers(0, 255, (8, 16, 3)), np.ones((8, 8, 1))).astype(np.uint8))
    sty = styler.invert(wide, N, N, record="styleid", progress=False)
    assert sty.inverted.shape[-1] == 2 * src.inverted.shape[-1]
    out = styler.transfer(src, config=InjectionConfig.preset("styleid", N), style_source=sty, progress=False)
    assert out.latents.shape == src.latents[-1:].shape and torch.isfinite(out.latents).all()


def test_rules_are_checked_against_the_unet_and_the_style_size(setup):
    styler, src, sty = setup
    bad = InjectionConfig(feature_steps=0, attention_steps=0, num_steps=N, rules=(Rule("self_k", (1,), 0, 5),))
    with pytest.raises(ds.InputError, match=r"self_k rule layers \[1\] have no attention in this UNet: use 3..11"):
        styler.transfer(src, config=bad, progress=False)
    wide = Image.fromarray(np.kron(np.random.default_rng(9).integers(0, 255, (8, 16, 3)), np.ones((8, 8, 1))).astype(np.uint8))
    wsty = styler.invert(wide, N, N, record="styleid", role="style", progress=False)
    half = InjectionConfig.preset("styleid", N).replace(rules=(Rule("self_k", tuple(range(6, 12)), 0, N, "style"),))
    with pytest.raises(ds.InputError, match="self_k without self_v from the style must match the content's size"):
        styler.transfer(src, config=half, style_source=wsty, progress=False)


def test_roles_keep_only_what_each_image_gives(setup):
    "A StyleID style needs only its K and V, a content only its Q: `role=` records about 2/3 and 1/3 of the union."
    styler, src, _ = setup
    img = Image.new("RGB", (64, 64), "gray")
    kinds = lambda t: {k for _, _, k in t.store.data}
    assert kinds(styler.invert(img, N, N, record="styleid", role="style", progress=False)) == {"inv_self_k", "inv_self_v"}
    assert kinds(styler.invert(img, N, N, record="styleid", role="content", progress=False)) == {"inv_self_q"}
    with pytest.raises(ds.InputError, match="role='both'"):
        styler.invert(img, N, N, record="styleid", role="both", progress=False)


def test_temperature_only_in_self_attention_where_q_or_k_is_injected():
    with pytest.raises(ds.InputError, match="attention_temperature needs source='base'"):
        InjectionConfig.official(attention_temperature=1.5)
    ctl = ds.InjectionController(inject=InjectionConfig.paper(attention_temperature=2.0), source=ds.FeatureStore())
    ctl.step = 0
    assert ctl.attention_scale("self", 4, 16) == 2.0 / 4 and ctl.attention_scale("cross", 4, 16) is None
    ctl.step = 40   # past the paper's 25 attention steps: nothing injected, nothing tempered
    assert ctl.attention_scale("self", 4, 16) is None
