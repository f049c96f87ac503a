"""Benchmark (issue 4): `diffstyler.lora.train_lora` step time against a plain peft training loop, same UNet, same batch.

Both loops train a rank-r LoRA on to_q/to_k/to_v with AdamW on the same latent, prompt and batch size, in one process,
alternating ours / plain for several rounds. A forward pre-hook on the UNet stamps each step (one UNet call per step in
both loops), so the step time is measured the same way for both and excludes set-up (adapter creation, VAE/text
encoding). Printed: median step time of each, and the throughput ratio ours / plain (target >= 0.95).

    .venv/bin/python bench/lora.py                 # tiny UNet, 64 px
    .venv/bin/python bench/lora.py --sd            # also SD 2.1's full UNet (random weights) at 128 px (16x16 latents)
"""
import argparse, statistics, sys, time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import numpy as np
import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler
from peft import LoraConfig

from diffstyler.core import prepare_image
from diffstyler.lora import delete_lora, train_lora
from diffstyler.models import encode_image, encode_text, image_size, load_pipeline, random_pipeline, sd21_unet_config

PROMPT = "a painting in <sss> style"
TARGETS = ("to_q", "to_k", "to_v")


def stripes(size):
    y, x = np.mgrid[:size, :size]
    return np.array(((230, 60, 40), (30, 40, 200)), dtype=np.uint8)[((x + y) // 8) % 2]


class StepClock:
    "Stamps every UNet forward call (wall and process CPU time); consecutive stamps are one training step apart."
    def __init__(self, unet):
        self.stamps = []
        self.h = unet.register_forward_pre_hook(lambda m, a: self.stamps.append((time.perf_counter(), time.process_time())))
    def reset(self): self.stamps.clear()
    def steps(self, skip=1):
        "[(wall s, cpu s)] per step, without the first `skip` steps (warm-up)."
        a = np.array(self.stamps)
        return [tuple(d) for d in np.diff(a, axis=0)[skip:]]


def plain_peft_loop(pipe, image, steps, rank, alpha, lr, batch_size, seed, name):
    "The textbook loop: add a peft LoRA through diffusers, AdamW on the trainable tensors, MSE to the noise."
    unet = pipe.unet
    z0 = encode_image(pipe, prepare_image(image, image_size(pipe))[0]).expand(batch_size, -1, -1, -1)
    cond = encode_text(pipe, PROMPT).expand(batch_size, -1, -1)
    torch.manual_seed(seed)   # the same initial A as train_lora draws for this seed, so both runs compute the same losses
    unet.add_adapter(LoraConfig(r=rank, lora_alpha=alpha, init_lora_weights="gaussian", target_modules=list(TARGETS)), adapter_name=name)
    unet.set_adapter(name)
    params = [p for p in unet.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr)
    sched = DDPMScheduler.from_config(pipe.scheduler.config)
    g = torch.Generator().manual_seed(seed)
    unet.train()
    losses = []
    for _ in range(steps):
        noise = torch.randn(z0.shape, generator=g)
        t = torch.randint(0, sched.config.num_train_timesteps, (batch_size,), generator=g)
        pred = unet(sched.add_noise(z0, noise, t), t, encoder_hidden_states=cond).sample
        loss = F.mse_loss(pred.float(), noise.float())
        loss.backward(); opt.step(); opt.zero_grad(set_to_none=True)
        losses.append(loss.item())
    unet.eval(); unet.requires_grad_(False)
    return losses


def bench(label, pipe, steps, rounds, rank, batch_size):
    image = stripes(image_size(pipe))
    clock = StepClock(pipe.unet)
    ours, plain = [], []
    kw = dict(rank=rank, alpha=rank, lr=1e-3, batch_size=batch_size, seed=0)
    for r in range(rounds):
        for who in (("ours", "plain") if r % 2 == 0 else ("plain", "ours")):   # alternate the order: drift hits both
            clock.reset()
            if who == "ours":
                s = train_lora(pipe, image, PROMPT, steps=steps, progress=False, name="bench_ours", **kw)
                ours += clock.steps(); l_ours = s.loss_history
                delete_lora(pipe, "bench_ours")
            else:
                l_plain = plain_peft_loop(pipe, image, steps, name="bench_plain", **{k: v for k, v in kw.items()})
                plain += clock.steps()
                delete_lora(pipe, "bench_plain")
    clock.h.remove()
    med = lambda xs, i: statistics.median(x[i] for x in xs)
    cpu_o, cpu_p, wall_o, wall_p = med(ours, 1), med(plain, 1), med(ours, 0), med(plain, 0)
    same = np.allclose(l_ours, l_plain, atol=1e-4)
    print(f"{label:36} {cpu_o * 1e3:9.1f} {cpu_p * 1e3:9.1f} {cpu_p / cpu_o:8.3f}  {wall_o * 1e3:9.1f} {wall_p * 1e3:9.1f} "
          f"{wall_p / wall_o:8.3f}  {len(ours):>4}/{len(plain):<4} {'yes' if same else 'no'}")
    return cpu_p / cpu_o, wall_p / wall_o


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=20, help="training steps per run")
    ap.add_argument("--rounds", type=int, default=4, help="runs of each loop, alternating")
    ap.add_argument("--rank", type=int, default=16)
    ap.add_argument("--batch-size", type=int, default=1)
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (keep <= free cores)")
    ap.add_argument("--sd", action="store_true", help="also SD 2.1's full-size UNet (random weights) at 16x16 latents")
    ap.add_argument("--sd-steps", type=int, default=6)
    ap.add_argument("--device", default="cpu")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    print(f"torch {torch.__version__}, {a.threads} thread(s), device {a.device}, rank {a.rank}, batch {a.batch_size}")
    print(f"{'':36} {'--- CPU time per step ---':^28}  {'--- wall time per step ---':^28}")
    print(f"{'UNet':36} {'ours ms':>9} {'plain ms':>9} {'ratio':>8}  {'ours ms':>9} {'plain ms':>9} {'ratio':>8}  {'steps':>9} same losses")
    ratios = [bench("tiny (64 px, 8x8 latents)", load_pipeline("tiny", device=a.device), a.steps, a.rounds, a.rank, a.batch_size)]
    if a.sd:
        pipe = random_pipeline(sd21_unet_config(sample_size=16), text_hidden=1024).to(a.device)
        ratios.append(bench("SD 2.1 UNet (128 px, 16x16 latents)", pipe, a.sd_steps, 2, a.rank, a.batch_size))
    worst = min(r[0] for r in ratios)
    print("ratio = plain step time / ours = our throughput relative to plain peft. CPU time is the robust figure on a")
    print("shared machine (other processes inflate wall time); on an idle machine or a GPU, read the wall-time ratio.")
    print(f"throughput ratio ours/plain (CPU time, worst model): {worst:.3f} (target >= 0.95) -> {'OK' if worst >= 0.95 else 'BELOW TARGET'}")


if __name__ == "__main__":
    main()
