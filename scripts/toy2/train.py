#!/usr/bin/env python
"""Train the second toy model's UNet (prototype): seeded, checkpointed every --ckpt-minutes (atomic), resumable.

Each batch holds `--layouts` layouts, each rendered in every base style (so within a batch, pictures that differ only
by the style word teach what the word means), 15% empty captions (classifier-free guidance), 10% style-only captions ("checker style"), z0-prediction with a plain
z0 MSE (every noise level weighs 1 in z0 units: the noisy steps, where the caption decides the picture, count fully;
epsilon-MSE would weigh them by SNR ~ 0), AdamW with a warm-up and a cosine over the time budget, EMA.
Why z0 and not v (measured, run r1): with v-prediction on this latent the UNet had not learnt the low-noise steps after
513 steps (v-MSE 0.94 at t=10, where predicting 0 scores 1.0), so samples from noise stayed noise; a z0 model gets
those steps almost free (copy the input) and spends its few CPU steps on the noisy ones.

  python scripts/toy2/train.py --name r1 --minutes 80            # new run in /root/toy2-runs/r1
  python scripts/toy2/train.py --name r1 --minutes 80 --resume   # continue (same total budget)
Writes: state.pt (full training state), ema/ (EMA pipeline, fp16), ckpt-<step>/ (EMA snapshots), log.jsonl."""
from __future__ import annotations
import argparse, copy, json, math, os, sys, time, socket
from pathlib import Path
sys.path.insert(0, str(Path(__file__).parent))
import numpy as np
import torch
from world import BASE_STYLES, render, caption, sample_layout, _coverage, to_tensor
from model import build_pipeline, save_pipeline


class Log:
    def __init__(self, path): self.path = Path(path)
    def __call__(self, **kw):
        kw = {"utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **kw}
        line = json.dumps({k: (round(v, 5) if isinstance(v, float) else v) for k, v in kw.items()})
        with open(self.path, "a") as f: f.write(line + "\n")
        print(line, flush=True)


def build_pool(pipe, n_layouts: int, seed: int):
    "Latents [L, S, C, 16, 16] (fp16, scaled) of n_layouts layouts in every base style, and token ids [L, S, 32]."
    rng = np.random.default_rng(seed)
    lat, ids = [], []
    tok, vae, sf = pipe.tokenizer, pipe.vae, pipe.vae.config.scaling_factor
    for start in range(0, n_layouts, 64):
        imgs, caps = [], []
        for _ in range(min(64, n_layouts - start)):
            lay = sample_layout(rng); cov = _coverage(lay)
            for s in BASE_STYLES: imgs.append(render(lay, s, cov)[0]); caps.append(caption(lay, s))
        with torch.no_grad(): z = vae.encode(to_tensor(imgs)).latent_dist.mean * sf
        lat.append(z.half().reshape(-1, len(BASE_STYLES), *z.shape[1:]))
        ids.append(tok(caps, padding="max_length", max_length=tok.model_max_length, truncation=True,
                       return_tensors="pt").input_ids.reshape(-1, len(BASE_STYLES), tok.model_max_length))
    return torch.cat(lat), torch.cat(ids)


def lr_at(lr, step, frac, warmup=50):
    return lr * min(1.0, (step + 1) / warmup) * (0.1 + 0.45 * (1 + math.cos(math.pi * min(frac, 1.0))))


def atomic_save(obj, path):
    tmp = Path(str(path) + ".tmp"); torch.save(obj, tmp); os.replace(tmp, path)


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--name", required=True); ap.add_argument("--root", default="/root/toy2-runs")
    ap.add_argument("--minutes", type=float, default=80, help="training time budget of this phase (pool build excluded)")
    ap.add_argument("--resume", action="store_true"); ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--layouts", type=int, default=8, help="layouts per batch (each in every base style)")
    ap.add_argument("--pool", type=int, default=5000); ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--p-uncond", type=float, default=0.15); ap.add_argument("--p-style-only", type=float, default=0.1)
    ap.add_argument("--ema", type=float, default=0.998)
    ap.add_argument("--widths", default="32,64,64,64"); ap.add_argument("--heads", default="2,2,2,2")
    ap.add_argument("--latent-channels", type=int, default=24); ap.add_argument("--pred", default="sample")
    ap.add_argument("--ckpt-minutes", type=float, default=10); ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--log-every", type=int, default=25); ap.add_argument("--phase", default="1")
    ap.add_argument("--skip-dropout", type=float, default=0.0, help="per-sample probability of zeroing the encoder skips "
                    "into the decoder's top up blocks (--skip-blocks) in a training step: the layout must then pass through the "
                    "deep decoder layers (3-5), which otherwise stay unused in a UNet this small (run r4)")
    ap.add_argument("--skip-blocks", default="2,3", help="up blocks whose skip connections --skip-dropout zeroes")
    ap.add_argument("--p-unknown", type=float, default=0.0, help="share of captions whose style word becomes a held-out "
                    "style's word (--unknown-words) over the same base-style picture: the base model learns that those words "
                    "carry no look, as SD treats a rare token, and a one-image LoRA can bind them (run r5)")
    ap.add_argument("--unknown-words", default="stripes,dots")
    ap.add_argument("--schedule-shift", type=float, default=1.0, help="multiply every step's SNR by this and rescale to "
                    "zero terminal SNR (model.shifted_scheduler; 16 = the 64x64/16x16 latent-size ratio squared; run r6)")
    ap.add_argument("--init", default=None, help="start a new phase from this checkpoint folder's UNet (fresh optimizer, new budget)")
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    run = Path(a.root) / a.name; run.mkdir(parents=True, exist_ok=True)
    log = Log(run / "log.jsonl")
    t_build = time.time()
    widths, heads = tuple(map(int, a.widths.split(","))), tuple(map(int, a.heads.split(",")))
    pipe = build_pipeline(a.seed, widths, heads, a.latent_channels, a.pred, tok_dir=run / "tok")
    unet, te = pipe.unet, pipe.text_encoder
    pool_file = run / "pool.pt"
    if pool_file.exists(): lat, ids = torch.load(pool_file)
    else: lat, ids = build_pool(pipe, a.pool, a.seed + 1); atomic_save((lat, ids), pool_file)
    empty = pipe.tokenizer([""], padding="max_length", max_length=pipe.tokenizer.model_max_length, return_tensors="pt").input_ids
    style_only = pipe.tokenizer([f"{s} style" for s in BASE_STYLES], padding="max_length",
                                max_length=pipe.tokenizer.model_max_length, return_tensors="pt").input_ids
    if a.schedule_shift != 1.0:
        from model import shifted_scheduler
        pipe.scheduler = shifted_scheduler(pipe.scheduler.config, a.schedule_shift)
    acp = pipe.scheduler.alphas_cumprod.float()
    unknown = torch.tensor([pipe.tokenizer(w).input_ids[1] for w in a.unknown_words.split(",")])
    assert all(len(pipe.tokenizer(w).input_ids) == 3 for w in a.unknown_words.split(",")), "one token per unknown word"
    if a.init:  # a new phase on a new budget: the previous phase's (EMA) UNet as the starting point
        from diffusers import UNet2DConditionModel
        unet.load_state_dict(UNet2DConditionModel.from_pretrained(str(Path(a.init) / "unet"), torch_dtype=torch.float32).state_dict())
    ema = copy.deepcopy(unet).eval().requires_grad_(False)
    drop = {"keep": None}  # [B, 1, 1, 1] 0/1 per sample while a training step runs, else None (the EMA copy has no hook)

    def skip_dropout(module, args, kwargs):  # forward pre-hook on an up block: zero the chosen samples' skip features
        if drop["keep"] is None: return None
        kwargs["res_hidden_states_tuple"] = tuple(r * drop["keep"] for r in kwargs["res_hidden_states_tuple"])
        return args, kwargs
    if a.skip_dropout > 0:
        for b in map(int, a.skip_blocks.split(",")): unet.up_blocks[b].register_forward_pre_hook(skip_dropout, with_kwargs=True)
    unet.train().requires_grad_(True)
    opt = torch.optim.AdamW(unet.parameters(), lr=a.lr, weight_decay=0.01)
    g = torch.Generator().manual_seed(a.seed)
    step, elapsed = 0, 0.0
    state_file = run / "state.pt"
    if a.resume and state_file.exists():
        st = torch.load(state_file, weights_only=False)
        unet.load_state_dict(st["unet"]); ema.load_state_dict(st["ema"]); opt.load_state_dict(st["opt"])
        g.set_state(st["gen"]); step, elapsed = st["step"], st["elapsed"]
        log(event="resume", step=step, elapsed=round(elapsed, 1))
    elif state_file.exists(): raise SystemExit(f"{state_file} exists: pass --resume or another --name")
    nparam = sum(p.numel() for p in unet.parameters())
    log(event="start", phase=a.phase, device="cpu", threads=a.threads, host=socket.gethostname(), params=nparam,
        args=vars(a), pool=list(lat.shape), build_s=round(time.time() - t_build, 1), latent_std=float(lat.float().std()))
    budget = a.minutes * 60
    S = len(BASE_STYLES)

    def checkpoint(final=False):
        atomic_save(dict(unet=unet.state_dict(), ema=ema.state_dict(), opt=opt.state_dict(), gen=g.get_state(),
                         step=step, elapsed=elapsed, args=vars(a)), state_file)
        save_pipeline(pipe, ema, run / "ema")
        save_pipeline(pipe, ema, run / f"ckpt-{step:06d}")
        log(event="final" if final else "checkpoint", step=step, elapsed=round(elapsed, 1))

    last_ckpt, t_last, losses, t_steps = elapsed, time.time(), [], []
    while elapsed < budget:
        t_step = time.time()
        for pg in opt.param_groups: pg["lr"] = lr_at(a.lr, step, elapsed / budget)
        li = torch.randint(0, len(lat), (a.layouts,), generator=g)
        z0 = lat[li].flatten(0, 1).float()                    # [layouts*S, C, 16, 16]: each layout in every base style
        tid = ids[li].flatten(0, 1).clone()
        B = len(z0)
        u = torch.rand(B, generator=g)
        short = (u >= a.p_uncond) & (u < a.p_uncond + a.p_style_only)  # "checker style": the style word alone
        tid[short] = style_only.repeat(a.layouts, 1)[short]
        tid[u < a.p_uncond] = empty
        unk = (u >= a.p_uncond + a.p_style_only) & (u < a.p_uncond + a.p_style_only + a.p_unknown)
        if unk.any():  # captions put the style word first: token 1 (after the start token)
            tid[unk, 1] = unknown[torch.randint(0, len(unknown), (int(unk.sum()),), generator=g)]
        with torch.no_grad(): c = te(tid)[0]
        t = torch.randint(0, 1000, (B,), generator=g)
        al = acp[t][:, None, None, None]
        noise = torch.randn(z0.shape, generator=g)
        zt = al.sqrt() * z0 + (1 - al).sqrt() * noise
        target = {"epsilon": noise, "v_prediction": al.sqrt() * noise - (1 - al).sqrt() * z0, "sample": z0}[a.pred]
        if a.skip_dropout > 0: drop["keep"] = (torch.rand(B, generator=g) >= a.skip_dropout).float()[:, None, None, None]
        pred = unet(zt, t, c).sample
        drop["keep"] = None
        loss = ((pred - target) ** 2).mean()
        opt.zero_grad(set_to_none=True); loss.backward()
        gn = torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0); opt.step()
        d = min(a.ema, (1 + step) / (10 + step))
        with torch.no_grad():
            for e, p in zip(ema.parameters(), unet.parameters()): e.lerp_(p, 1 - d)
        losses.append(loss.item()); t_steps.append(time.time() - t_step)
        step += 1
        now = time.time(); elapsed += now - t_last; t_last = now
        if step % a.log_every == 0:
            log(step=step, elapsed=round(elapsed, 1), loss=float(np.mean(losses)), s_per_step=float(np.mean(t_steps)),
                lr=opt.param_groups[0]["lr"], grad_norm=float(gn))
            losses, t_steps = [], []
        if elapsed - last_ckpt > a.ckpt_minutes * 60: checkpoint(); last_ckpt = elapsed; t_last = time.time()
    checkpoint(final=True)


if __name__ == "__main__":
    main()
