"""examples/: the YAML batch runs as examples/README.md says (here on the tiny random model, few steps, for speed)."""
import re, shutil
from pathlib import Path

import yaml

from diffstyler.cli import main

ROOT = Path(__file__).resolve().parent.parent
EX = ROOT / "examples"


def test_batch_runs_with_the_readme_commands(tmp_path, capsys):
    ex = tmp_path / "examples"
    shutil.copytree(EX, ex, ignore=shutil.ignore_patterns("out"))
    (ex / "out").mkdir()
    readme = (EX / "README.md").read_text()
    # the README's train-lora commands, with the tiny model and 3 steps instead of the toy recipe
    cmds = re.findall(r"diffstyler train-lora (examples/\S+) --prompt \"([^\"]+)\" \\\n\s+--out (examples/\S+)", readme)
    assert len(cmds) == 2, cmds
    for img, prompt, out in cmds:
        assert main(["train-lora", str(tmp_path / img), "--prompt", prompt, "--out", str(tmp_path / out),
                     "--model", "tiny", "--steps", "3", "--quiet"]) == 0
    assert main(["run", str(ex / "batch.yaml"), "--model", "tiny", "--set", "n_timesteps=3",
                 "--set", "inversion_steps=6", "--quiet"]) == 0
    runs = yaml.safe_load((EX / "batch.yaml").read_text())["runs"]
    for r in runs:
        out = ex / r["output_path"]
        assert out.exists() and out.with_suffix(".config.json").exists(), out
    assert len(runs) == 3
