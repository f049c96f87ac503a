"""bench/gpu_check.py in its tiny CPU mode: every stage runs and the JSON has the fields the GPU run reports."""
import importlib.util, json
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_gpu_check_tiny_mode(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "bench" / "gpu_check.py")
    gc = importlib.util.module_from_spec(spec); spec.loader.exec_module(gc)
    out = tmp_path / "check.json"
    res = gc.main(["--tiny", "--device", "cpu", "--inversion-steps", "20", "--steps", "5", "--lora-steps", "2", "--repeats", "2",
                   "--out", str(out)])
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])   # one JSON object, on the last line
    assert printed == json.loads(out.read_text()) == json.loads(json.dumps(res))
    assert res["mode"] == "tiny" and res["size_px"] == 64 and res["dtype"] == "float32"
    st = res["stages"]
    assert set(st) == {"build", "lora_train", "invert", "paper", "rerender", "official", "two_style"}
    assert st["lora_train"]["steps"] == 2 and st["invert"]["steps"] == 25 and st["paper"]["steps"] == 5
    for name, s in st.items():
        assert s["seconds"] > 0, name
        if "steps" in s:   # seconds are rounded to 1 ms, ms_per_step to 0.01 ms
            assert abs(s["ms_per_step"] - 1000 * s["seconds"] / s["steps"]) <= 0.5 / s["steps"] + 0.01, name
    assert st["invert"]["inversion_seconds"] + st["invert"]["source_pass_seconds"] <= st["invert"]["seconds"] + 1e-3
    r = res["ratios"]
    assert r["injected_step_over_plain_step"] > 0 and r["plain_step_ms"] > 0
    assert 0 < r["rerender_over_first_run"] < 1   # a re-render never re-runs the inversion
    assert res["peak_gib_overall"] is None and "peak_gib" not in st["paper"]   # no GPU memory figures on the CPU
