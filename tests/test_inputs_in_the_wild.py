"""Issue 15: what users really feed it. Diverged trainings (finiteness everywhere), community LoRA files (kohya/A1111 with
per-module alphas and rank mixes, diffusers attention processors, peft, the DiffStyler authors' .ckpt), masks with EXIF
orientation and palette labels, non-square content, and odd load_image inputs. Tiny random pipeline, CPU, offline."""
import copy, json, math, os, subprocess, sys, warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

import diffstyler as ds
from diffstyler.core import InputError, dumps_json, load_image, working_size
from diffstyler.inversion import SourceTrajectory
from diffstyler.lora import (INFO_NAME, WEIGHT_NAME, adapter_names, load_lora, save_lora, train_lora, use_adapter,
                             _checkpoints)
from diffstyler.masks import load_mask, to_latent_mask
from diffstyler.models import encode_text, tiny_pipeline

torch.set_num_threads(1)
ROOT = Path(__file__).resolve().parent.parent
PROMPT = "a painting in <sss> style"


@pytest.fixture(scope="module")
def pipe():
    return tiny_pipeline(0)


def stripes(w=64, h=64):
    y, x = np.mgrid[:h, :w]
    return np.array([(230, 60, 40), (30, 40, 200)], dtype=np.uint8)[((x + y) // 8) % 2]


# ---------------------------------------------------------------------------------------------------------------------
# 1. finiteness
# ---------------------------------------------------------------------------------------------------------------------
def test_diverged_training_stops_keeps_last_good_checkpoint(pipe, tmp_path):
    run = tmp_path / "fried"
    with pytest.raises(InputError) as e:
        train_lora(pipe, stripes(), PROMPT, rank=4, steps=8, lr=1e6, save_to=run, checkpoint_every=1, progress=False, name="fried")
    msg = str(e.value)
    assert "\n" not in msg and "diverged at step 2 of 8" in msg and "lr=1e+06" in msg, msg
    assert "the last good checkpoint" in msg and "checkpoint-000001" in msg, msg
    assert not (run / WEIGHT_NAME).exists()                       # no broken weights file
    ck = _checkpoints(run)
    assert [s for s, _ in ck] == [1]                              # step 1 was finite; nothing after it was written
    assert all(torch.isfinite(v).all() for v in load_file(str(ck[0][1] / WEIGHT_NAME)).values())
    assert json.loads((ck[0][1] / INFO_NAME).read_text())["loss_history"][0] > 0
    assert "fried" not in adapter_names(pipe)                     # the UNet is as it was


def test_diverged_training_without_folder_writes_nothing(pipe, tmp_path):
    with pytest.raises(InputError, match=r"diverged at step \d+ of 5: .*\(lr=1e\+06\).*no weights were written"):
        train_lora(pipe, stripes(), PROMPT, rank=4, steps=5, lr=1e6, progress=False, name="fried2")
    assert "fried2" not in adapter_names(pipe)


def _kohya_file(unet, path, rank=lambda n: 4, alpha=lambda n: 4.0, scale=0.05, extra=None, seed=0):
    "A kohya/A1111 file for every to_q/to_k/to_v/to_out.0 of `unet`; returns the hand-computed deltas {module: dW}."
    g = torch.Generator().manual_seed(seed)
    sd, expected = {}, {}
    for n, m in unet.named_modules():
        if isinstance(m, torch.nn.Linear) and (n.split(".")[-1] in ("to_q", "to_k", "to_v") or n.endswith("to_out.0")) \
                and ".lora_" not in n and not n.endswith("base_layer"):
            r, a = rank(n), alpha(n)
            stem = "lora_unet_" + n.replace(".", "_")
            down = torch.randn(r, m.in_features, generator=g) * scale
            up = torch.randn(m.out_features, r, generator=g) * scale
            sd[f"{stem}.lora_down.weight"], sd[f"{stem}.lora_up.weight"] = down, up
            if a is not None: sd[f"{stem}.alpha"] = torch.tensor(a)
            expected[n] = up @ down * ((a if a else r) / r)
    sd.update(extra or {})
    save_file(sd, str(path))
    return expected


def test_load_refuses_non_finite_files(pipe, tmp_path):
    exp = _kohya_file(pipe.unet, tmp_path / "ok.safetensors")
    sd = load_file(str(tmp_path / "ok.safetensors"))
    for kind, bad in (("nan", float("nan")), ("inf", float("inf"))):
        for dtype in (torch.float32, torch.float16, torch.bfloat16):
            d = {k: v.to(dtype) if v.ndim else v for k, v in sd.items()}
            k0 = next(k for k in d if k.endswith("lora_up.weight"))
            d[k0] = d[k0].clone(); d[k0][0, 0] = bad
            f = tmp_path / f"{kind}_{str(dtype)[6:]}.safetensors"; save_file(d, str(f))
            with pytest.raises(InputError, match=r"has 1 of \d+ tensors with NaN or infinite values.*diverged") as e:
                load_lora(pipe, f)
            assert "\n" not in str(e.value)
    torch.save({k: torch.full_like(v, float("nan")) for k, v in sd.items()}, tmp_path / "nan.ckpt")
    with pytest.raises(InputError, match="NaN or infinite"):
        load_lora(pipe, tmp_path / "nan.ckpt")
    assert adapter_names(pipe) == []


def test_inversion_and_transfer_raise_instead_of_decoding_nan(tmp_path):
    p = tiny_pipeline(0)
    st = ds.DiffStyler(p)
    src = st.invert(stripes(), num_inversion_steps=10, num_steps=5, progress=False)
    # an adapter whose weights are NaN (what a diverged run left in memory): the styled pass must stop at its first step
    from peft import LoraConfig
    p.unet.add_adapter(LoraConfig(r=2, lora_alpha=2, target_modules=["to_q"], init_lora_weights="gaussian"), adapter_name="nan")
    with torch.no_grad():
        for n, prm in p.unet.named_parameters():
            if ".lora_B.nan." in n: prm.fill_(float("nan"))
    with pytest.raises(InputError, match=r"styled pass at step 1 of 5 \(LoRA 'nan'\) produced NaN or infinite latents") as e:
        st.transfer(src, style="nan", config=ds.InjectionConfig.paper(5), progress=False)
    assert "\n" not in str(e.value)
    # a source trajectory file holding NaN is refused when read
    src.latents[2] = float("nan"); src.save(tmp_path / "nan_src.safetensors")
    with pytest.raises(InputError, match="holds NaN or infinite latents"):
        SourceTrajectory.load(tmp_path / "nan_src.safetensors")
    # a model that overflows: the inversion stops and says where
    with torch.no_grad(): p.unet.conv_out.bias.fill_(float("inf"))
    with pytest.raises(InputError, match=r"DDIM inversion at timestep \d+ produced NaN or infinite latents"):
        st.invert(stripes(), num_inversion_steps=10, num_steps=5, progress=False)


def test_json_never_holds_nan(tmp_path):
    s = dumps_json({"loss_history": [1.0, float("nan"), float("-inf")], "x": np.float64("nan")})
    assert "NaN" not in s and "Infinity" not in s
    assert json.loads(s) == {"loss_history": [1.0, None, None], "x": None}


def test_cli_diverged_training_exit_2_one_line(tmp_path, capsys):
    from diffstyler.cli import main
    Image.fromarray(stripes()).save(tmp_path / "style.png")
    code = main(["train-lora", str(tmp_path / "style.png"), "--prompt", PROMPT, "--out", str(tmp_path / "lora"), "--steps", "6",
                 "--lr", "1e6", "--checkpoint-every", "0", "--model", "tiny", "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len([l for l in err if "diverged" in l]) == 1 and "--lr 1e+06" in err[-1], err   # the CLI names its own option
    assert not (tmp_path / "lora" / WEIGHT_NAME).exists()
    for f in tmp_path.rglob("*.json"): json.loads(f.read_text(), parse_constant=lambda c: pytest.fail(f"{f} holds {c}"))


# ---------------------------------------------------------------------------------------------------------------------
# 2. community LoRA formats, each against a UNet merged by hand
# ---------------------------------------------------------------------------------------------------------------------
PROBE = (torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(3)), torch.tensor([500]))


@torch.no_grad()
def merged_by_hand(pipe, expected):
    ref = copy.deepcopy(tiny_pipeline(0).unet)
    for n, dw in expected.items():
        w = ref.get_submodule(n).weight
        w += dw.reshape(w.shape)
    return ref


@torch.no_grad()
def compare(pipe, name, expected):
    "(max |adapter - hand-merged| merged path, same on the LoRA path, LoRA effect)"
    z, t = PROBE
    cond = encode_text(pipe, PROMPT)
    want = merged_by_hand(pipe, expected)(z, t, encoder_hidden_states=cond).sample
    with use_adapter(pipe.unet, name): got = pipe.unet(z, t, encoder_hidden_states=cond).sample
    with use_adapter(pipe.unet, name, merged=False): got_lora = pipe.unet(z, t, encoder_hidden_states=cond).sample
    with use_adapter(pipe.unet, None): base = pipe.unet(z, t, encoder_hidden_states=cond).sample
    return (got - want).abs().max().item(), (got_lora - want).abs().max().item(), (want - base).abs().max().item()


def test_kohya_per_module_alpha_rank_mix_and_text_encoder(tmp_path):
    p = tiny_pipeline(0)
    te = {"lora_te_text_model_encoder_layers_0_self_attn_q_proj.lora_down.weight": torch.zeros(2, 32),
          "lora_te_text_model_encoder_layers_0_self_attn_q_proj.lora_up.weight": torch.zeros(32, 2),
          "lora_te_text_model_encoder_layers_0_self_attn_q_proj.alpha": torch.tensor(1.0)}
    rank = lambda n: 8 if "up_blocks" in n else 4 if "attn1" in n else 2             # rank mixes
    alpha = lambda n: {8: 16.0, 4: 2.0, 2: None}[rank(n)] if "mid_block" not in n else 0.0   # per-module alpha, missing, 0
    exp = _kohya_file(p.unet, tmp_path / "resized.safetensors", rank, alpha, scale=0.15, extra=te)
    with pytest.warns(UserWarning, match="its 3 text-encoder tensors are ignored"):
        s = load_lora(p, tmp_path / "resized.safetensors")
    assert s.target_modules == ("to_k", "to_out.0", "to_q", "to_v")
    err, err_lora, effect = compare(p, s.name, exp)
    assert effect > 0.1, effect                       # the LoRA changes the output visibly...
    assert err < 1e-5 and err_lora < 1e-3, (err, err_lora, effect)   # ...and exactly as the hand-merged UNet does
    # the adapter saved again (peft format, rank_pattern / alpha_pattern in the metadata) reloads exactly, in ours and in diffusers
    save_lora(p, s.name, tmp_path / "again")
    q = tiny_pipeline(0); s2 = load_lora(q, tmp_path / "again")
    assert compare(q, s2.name, exp)[0] < 1e-5
    d = tiny_pipeline(0); d.load_lora_weights(str(tmp_path / "again"), adapter_name="plain")
    assert compare(d, "plain", exp)[1] < 1e-3


def test_case_03_giant_alphas_are_exact(tmp_path):
    "The issue's case: rank 4, alpha 8 in up blocks and 2 elsewhere, weights ~0.25: off by 0.77 before, bitwise now."
    p = tiny_pipeline(0)
    exp = _kohya_file(p.unet, tmp_path / "c3.safetensors", alpha=lambda n: 8.0 if "up_blocks" in n else 2.0, scale=0.5)
    s = load_lora(p, tmp_path / "c3.safetensors")
    err, _, effect = compare(p, s.name, exp)
    assert effect > 0.5 and err < 1e-3, (err, effect)


def _authors_ckpt(unet, rank=16, prefix="unet.", seed=1):
    "A state dict as the DiffStyler authors' lora_train.py writes it: diffusers 0.17.1 LoRAAttnProcessor keys, to_out included."
    g = torch.Generator().manual_seed(seed)
    sd, expected = {}, {}
    for n, m in unet.named_modules():
        if n.endswith(("attn1", "attn2")) and hasattr(m, "to_q"):
            for proj, lin in (("to_q", m.to_q), ("to_k", m.to_k), ("to_v", m.to_v), ("to_out", m.to_out[0])):
                down = torch.randn(rank, lin.in_features, generator=g) * 0.02
                up = torch.randn(lin.out_features, rank, generator=g) * 0.02
                sd[f"{prefix}{n}.processor.{proj}_lora.down.weight"] = down
                sd[f"{prefix}{n}.processor.{proj}_lora.up.weight"] = up
                expected[f"{n}.{'to_out.0' if proj == 'to_out' else proj}"] = up @ down   # network_alpha=None: scale 1
    return sd, expected


@pytest.mark.parametrize("prefix", ["unet.", ""])
def test_authors_ckpt_pickle_loads_at_scale_1(tmp_path, prefix):
    p = tiny_pipeline(0)
    sd, exp = _authors_ckpt(p.unet, prefix=prefix)
    (tmp_path / "lora_models").mkdir()
    torch.save(sd, tmp_path / "lora_models" / "lora_girl_c1.ckpt")
    s = load_lora(p, tmp_path / "lora_models")                 # the folder: its one pickle is found
    assert (s.name, s.rank, s.alpha, s.target_modules) == ("lora_girl_c1", 16, 16, ("to_k", "to_out.0", "to_q", "to_v"))
    err, err_lora, effect = compare(p, s.name, exp)
    assert effect > 1e-3 and err < 1e-5 and err_lora < 1e-3, (err, err_lora, effect)
    # the same tensors as .safetensors (save_attn_procs) load the same
    save_file(sd, str(tmp_path / "procs.safetensors"))
    s2 = load_lora(p, tmp_path / "procs.safetensors")
    assert compare(p, s2.name, exp)[0] < 1e-5


def test_pickles_that_are_not_plain_tensors_are_refused(tmp_path):
    p = tiny_pipeline(0)
    sd, _ = _authors_ckpt(p.unet)
    torch.save({"state_dict": sd}, tmp_path / "nested.ckpt")
    torch.save({"a": np.zeros(3)}, tmp_path / "numpy.pt")
    torch.save([torch.zeros(2)], tmp_path / "list.pth")
    (tmp_path / "junk.bin").write_bytes(b"\x80\x04junk")
    cases = {"nested.ckpt": "does not hold a flat dict of named tensors (found 'state_dict': dict)",
             "numpy.pt": "holds Python objects besides tensors",
             "list.pth": "does not hold a flat dict of named tensors (found list)",
             "junk.bin": "cannot be read as a torch pickle"}
    for f, msg in cases.items():
        with pytest.raises(InputError) as e:
            load_lora(p, tmp_path / f)
        assert msg in str(e.value) and "\n" not in str(e.value) and f in str(e.value), str(e.value)
    assert adapter_names(p) == []


def test_peft_save_pretrained_format_with_rslora_and_patterns(tmp_path):
    "peft's own files: base_model.model.<path>.lora_A.weight + adapter_config.json (rank/alpha patterns, rsLoRA)."
    p = tiny_pipeline(0)
    g = torch.Generator().manual_seed(5)
    sd, exp, cfg = {}, {}, dict(r=4, lora_alpha=8, use_rslora=True, rank_pattern={"attn2.to_k": 2}, alpha_pattern={"attn2.to_k": 3})
    for n, m in p.unet.named_modules():
        if isinstance(m, torch.nn.Linear) and n.split(".")[-1] in ("to_q", "to_k"):
            r, a = (2, 3) if n.endswith("attn2.to_k") else (4, 8)
            A, B = torch.randn(r, m.in_features, generator=g) * 0.1, torch.randn(m.out_features, r, generator=g) * 0.1
            sd[f"base_model.model.{n}.lora_A.weight"], sd[f"base_model.model.{n}.lora_B.weight"] = A, B
            exp[n] = B @ A * (a / math.sqrt(r))
    save_file(sd, str(tmp_path / "adapter_model.safetensors")); (tmp_path / "adapter_config.json").write_text(json.dumps(cfg))
    s = load_lora(p, tmp_path / "adapter_model.safetensors")
    err, err_lora, effect = compare(p, s.name, exp)
    assert effect > 1e-3 and err < 1e-5 and err_lora < 1e-3, (err, err_lora, effect)


def test_conv_lora_kohya_locon(tmp_path):
    "A plain LoRA on 3x3 convolutions (LoCon without a middle), and a Linear-shaped LoRA on a 1x1 conv, load exactly."
    p = tiny_pipeline(0)
    g = torch.Generator().manual_seed(2)
    sd, exp = {}, {}
    for n in ("down_blocks.0.resnets.0.conv1", "up_blocks.3.resnets.0.conv2", "up_blocks.1.resnets.0.conv_shortcut"):
        m = p.unet.get_submodule(n)
        k = m.kernel_size
        down = torch.randn(4, m.in_channels, *k, generator=g) * 0.05
        up = torch.randn(m.out_channels, 4, 1, 1, generator=g) * 0.05
        stem = "lora_unet_" + n.replace(".", "_")
        sd[f"{stem}.lora_down.weight"] = down if k != (1, 1) else down[..., 0, 0]   # kohya writes 1x1 as Linear shape sometimes
        sd[f"{stem}.lora_up.weight"], sd[f"{stem}.alpha"] = up, torch.tensor(2.0)
        exp[n] = (up.flatten(1) @ down.flatten(1)).reshape(m.weight.shape) * 0.5
    save_file(sd, str(tmp_path / "locon.safetensors"))
    s = load_lora(p, tmp_path / "locon.safetensors")
    err, err_lora, effect = compare(p, s.name, exp)
    assert effect > 1e-4 and err < 1e-5 and err_lora < 1e-3, (err, err_lora, effect)


@pytest.mark.parametrize("extra,msg", [
    ({"lora_unet_down_blocks_0_attentions_0_proj_in.hada_w1_a": torch.zeros(2, 2)}, "holds LoHa"),
    ({"lora_unet_down_blocks_0_attentions_0_proj_in.lokr_w1": torch.zeros(2, 2)}, "holds LoKr"),
    ({"lora_unet_down_blocks_0_attentions_0_proj_in.dora_scale": torch.zeros(2, 2)}, "holds DoRA"),
    ({"lora_unet_down_blocks_0_attentions_0_proj_in.lora_mid.weight": torch.zeros(2, 2)}, "lora_mid"),
    ({"lora_unet_input_blocks_1_1_proj_in.lora_down.weight": torch.zeros(2, 32),
      "lora_unet_input_blocks_1_1_proj_in.lora_up.weight": torch.zeros(32, 2)}, "original SD (LDM) layer names"),
])
def test_kohya_kinds_we_cannot_load_exactly_are_refused(tmp_path, extra, msg):
    p = tiny_pipeline(0)
    _kohya_file(p.unet, tmp_path / "x.safetensors", extra=extra)
    with pytest.raises(InputError) as e:
        load_lora(p, tmp_path / "x.safetensors")
    assert msg in str(e.value) and "\n" not in str(e.value), str(e.value)
    assert adapter_names(p) == []


def test_dora_and_inconsistent_metadata_refused(tmp_path):
    p = tiny_pipeline(0)
    n = "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q"
    m = p.unet.get_submodule(n)
    base = {f"unet.{n}.lora_A.weight": torch.zeros(4, m.in_features), f"unet.{n}.lora_B.weight": torch.zeros(m.out_features, 4)}
    save_file({**base, f"unet.{n}.lora_magnitude_vector": torch.ones(m.out_features)}, str(tmp_path / "dora.safetensors"))
    meta = {"format": "pt", "lora_adapter_metadata": json.dumps({"unet.r": 8, "unet.lora_alpha": 8})}
    save_file(base, str(tmp_path / "liar.safetensors"), metadata=meta)
    with pytest.raises(InputError, match="is a DoRA adapter"): load_lora(p, tmp_path / "dora.safetensors")
    with pytest.raises(InputError, match="metadata gives .* rank 8 but its tensors have rank 4"): load_lora(p, tmp_path / "liar.safetensors")


# ---------------------------------------------------------------------------------------------------------------------
# 3. masks from files
# ---------------------------------------------------------------------------------------------------------------------
_INVERSE = {1: None, 2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
            5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_90, 7: Image.Transpose.TRANSVERSE, 8: Image.Transpose.ROTATE_270}


def _with_orientation(img, orientation, path, **save):
    "Store `img` (as the user sees it) the way a camera does: pixels in sensor order plus the EXIF Orientation tag."
    raw = img if _INVERSE[orientation] is None else img.transpose(_INVERSE[orientation])
    exif = Image.Exif(); exif[0x0112] = orientation
    raw.save(path, exif=exif.tobytes(), **save)


@pytest.mark.parametrize("orientation", range(1, 9))
@pytest.mark.parametrize("fmt", ["png", "jpg"])
def test_mask_and_content_share_exif_orientation(tmp_path, orientation, fmt):
    seen = np.zeros((48, 80), np.uint8); seen[4:20, 50:76] = 255          # an object in the top-right corner, as seen
    photo = np.stack([seen, seen // 2, 255 - seen], -1)
    opts = dict(quality=95) if fmt == "jpg" else {}
    _with_orientation(Image.fromarray(photo), orientation, tmp_path / f"photo.{fmt}", **opts)
    _with_orientation(Image.fromarray(seen), orientation, tmp_path / f"mask.{fmt}", **opts)
    content = load_image(tmp_path / f"photo.{fmt}")
    with warnings.catch_warnings():
        warnings.simplefilter("error")                              # same size as the content: no resize warning
        m = load_mask(tmp_path / f"mask.{fmt}", size=content.size)
    assert content.size == (80, 48) and m.shape == (48, 80)
    want = torch.from_numpy(seen / 255.0).float()
    tol = 0 if fmt == "png" else 0.1
    assert (m - want).abs().max() <= tol + 1e-6 if fmt == "png" else ((m > 0.5) != (want > 0.5)).float().mean() < 0.01
    # the mask and the content agree as registered
    assert (torch.from_numpy(np.asarray(content)[..., 0] / 255.0) - m).abs().mean() < 0.03
    # a PIL image with an orientation tag is turned the same way
    with Image.open(tmp_path / f"mask.{fmt}") as im:
        assert ((load_mask(im) > 0.5) == (m > 0.5)).float().mean() > 0.99


def test_palette_labels_by_index(tmp_path):
    lab = np.zeros((64, 64), np.uint8); lab[8:24, 8:24] = 1; lab[40:60, 30:50] = 14   # two classes
    im = Image.fromarray(lab, "P"); im.putpalette([0, 0, 0, 128, 0, 0] + [0, 0, 0] * 12 + [0, 64, 0] + [0, 0, 0] * 241)
    im.save(tmp_path / "label.png")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        m = load_mask(tmp_path / "label.png", size=(64, 64))
    assert torch.equal(m, torch.from_numpy((lab > 0).astype(np.float32)))     # any non-zero index is inside, at full strength
    # with transparency (PA / tRNS) too
    im.info["transparency"] = 0; im.save(tmp_path / "label_trns.png")
    assert torch.equal(load_mask(tmp_path / "label_trns.png"), m)
    assert torch.equal(load_mask(im.convert("PA")), m)
    # index 0 drawn white: read by index, with a warning that says so
    inv = Image.fromarray((lab > 0).astype(np.uint8), "P"); inv.putpalette([255, 255, 255, 0, 0, 0] + [0, 0, 0] * 254)
    with pytest.warns(UserWarning, match="index 0 is its brightest colour"):
        load_mask(inv)


def test_weak_masks_warn(tmp_path):
    lab = np.zeros((32, 32, 3), np.uint8); lab[8:24, 8:24] = (128, 0, 0)       # a label image saved as RGB
    Image.fromarray(lab).save(tmp_path / "rgb_label.png")
    with pytest.warns(UserWarning, match=r"never reaches 1 \(max 0.50\).*threshold=0.25"):
        m = load_mask(tmp_path / "rgb_label.png")
    assert abs(m.max().item() - 128 / 255) < 1e-6
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert load_mask(tmp_path / "rgb_label.png", threshold=0.25).max() == 1         # binarised: no warning
        load_mask(np.full((8, 8), 0.8, np.float32))                                     # 0.8 is not "far below 1"


@pytest.mark.parametrize("mode", ["L", "LA", "RGBA", "I;16", "I", "1", "F", "RGB", "P"])
def test_every_mode_gives_the_same_mask(tmp_path, mode):
    obj = np.zeros((40, 56), bool); obj[10:30, 5:40] = True
    if mode == "LA": img = Image.fromarray(np.stack([np.full_like(obj, 255, np.uint8), obj.astype(np.uint8) * 255], -1), "LA")
    elif mode == "RGBA": a = np.zeros((40, 56, 4), np.uint8); a[..., :3] = 255; a[..., 3] = obj * 255; img = Image.fromarray(a, "RGBA")
    elif mode == "I;16": img = Image.fromarray(obj.astype(np.uint16) * 65535)
    elif mode == "I": img = Image.fromarray(obj.astype(np.int32) * 255, "I")
    elif mode == "1": img = Image.fromarray(obj).convert("1")
    elif mode == "F": img = Image.fromarray(obj.astype(np.float32), "F")
    elif mode == "RGB": img = Image.fromarray(np.stack([obj.astype(np.uint8) * 255] * 3, -1))
    elif mode == "P": img = Image.fromarray(obj.astype(np.uint8) * 255).convert("P")
    else: img = Image.fromarray(obj.astype(np.uint8) * 255)
    assert img.mode == mode or (mode == "I;16" and img.mode.startswith("I;16")), img.mode
    fmt = "tiff" if mode in ("F", "I") else "png"
    img.save(tmp_path / f"m.{fmt}")
    for src in (img, tmp_path / f"m.{fmt}"):
        m = load_mask(src)
        assert torch.equal(m, torch.from_numpy(obj.astype(np.float32))), (mode, src, m.max())


# ---------------------------------------------------------------------------------------------------------------------
# 4. non-square content
# ---------------------------------------------------------------------------------------------------------------------
def test_non_square_content_keeps_aspect_and_masks_follow(tmp_path):
    p = tiny_pipeline(0)
    st = ds.DiffStyler(p)
    content = stripes(w=150, h=70)                      # about 2.1:1
    obj = np.zeros((70, 150), np.uint8); obj[:, :75] = 255                  # the left half, at the content's size
    with warnings.catch_warnings():
        warnings.simplefilter("error")                  # no aspect-ratio or resize warning anywhere
        src = st.invert(content, num_inversion_steps=10, num_steps=5, progress=False)
        assert tuple(src.latents.shape[-2:]) == (8, 16)          # shorter side 64 px, 150/70*64 = 137 -> 128 (multiple of 64)
        from peft import LoraConfig
        p.unet.add_adapter(LoraConfig(r=2, lora_alpha=2, target_modules=["to_q"], init_lora_weights="gaussian"), adapter_name="s")
        with torch.no_grad():
            for n, prm in p.unet.named_parameters():
                if ".lora_B.s." in n: prm.normal_(0, 0.5)
        r = st.transfer(src, style="s", mask=obj, config=ds.InjectionConfig.paper(5), progress=False)
    assert r.image.size == (150, 70)
    m = r.masks[0]
    assert tuple(m.shape[-2:]) == (8, 16) and torch.equal(m[0, 0, :, :8], torch.ones(8, 8)) and torch.equal(m[0, 0, :, 8:], torch.zeros(8, 8))
    # latent fusion (eq. 6): outside the mask the latents are the source's exactly; inside they are styled
    assert torch.equal(r.latents[..., 8:], src.latents[-1:, :, :, 8:].to(r.latents))
    assert (r.latents[..., :8] - src.latents[-1:, :, :, :8].to(r.latents)).abs().max() > 1e-3
    # a mask of another picture's shape still warns
    with pytest.warns(UserWarning, match="aspect ratio changes"):
        st.transfer(src, style="s", mask=np.ones((70, 70), np.uint8), config=ds.InjectionConfig.paper(5), progress=False)


def test_working_size_rules():
    assert working_size(640, 480, 512, 64) == (704, 512)     # SD: 64-px multiples (latents in multiples of 8)
    assert working_size(480, 640, 512, 8) == (512, 680)
    assert working_size(4000, 3000, 512, 64) == working_size(640, 480, 512, 64)
    to_latent = to_latent_mask(torch.ones(480, 640), (64, 88))   # the same picture's latents: no aspect warning
    assert to_latent.shape == (1, 1, 64, 88)


# ---------------------------------------------------------------------------------------------------------------------
# 5. odd inputs
# ---------------------------------------------------------------------------------------------------------------------
def test_load_image_odd_inputs_and_truncated_files(tmp_path):
    img = Image.fromarray(stripes())
    for bad, kind in (((img, {"mask": None}), "tuple"), ([img], "list"), (None, "NoneType"), (7, "int"), ({"a": 1}, "dict")):
        with pytest.raises(InputError) as e:
            load_image(bad, name="content")
        assert f"content is a {kind}" in str(e.value) and "\n" not in str(e.value)
    img.save(tmp_path / "a.jpg", quality=90); b = (tmp_path / "a.jpg").read_bytes()
    img.save(tmp_path / "a.png"); bp = (tmp_path / "a.png").read_bytes()
    for name, data in (("half.jpg", b[:len(b) // 2]), ("tail_cut.jpg", b[:-40]), ("half.png", bp[:len(bp) // 2])):
        (tmp_path / name).write_bytes(data)
        for loader in (load_image, load_mask):
            with pytest.raises(InputError, match="is truncated or corrupt") as e:
                loader(tmp_path / name)
            assert str(tmp_path / name) in str(e.value)


def test_tiny_pipeline_leaves_no_tokenizer_folders(tmp_path):
    code = "import diffstyler as ds; [ds.load_pipeline('tiny') for _ in range(3)]; print('ok')"
    env = dict(os.environ, TMPDIR=str(tmp_path), OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and "ok" in r.stdout, r.stderr[-2000:]
    assert not list(tmp_path.glob("diffstyler-tok-*")), list(tmp_path.iterdir())
