"""benchmarks/gpu.sh and benchmarks/gpu_step.py, run on the CPU for their logic (the figures
themselves need a GPU: docs/distributed.md)."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu.sh"


def _run(args, out, timeout=300):
    # one thread: two OpenMP threads on a busy two-core machine can be ten times slower
    env = os.environ | {"OUT": str(out), "OMP_NUM_THREADS": "1", "PY": sys.executable}
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True,
                          timeout=timeout, env=env, cwd=ROOT)


@pytest.mark.slow
def test_gpu_script_smoke_on_the_cpu(tmp_path):
    out = tmp_path / "results"
    proc = _run(["--device", "cpu", "--quick", "--model", "cnn"], out)
    assert proc.returncode == 0, proc.stderr[-3000:]
    step = json.loads((out / "step.json").read_text())["step"]
    assert set(step["settings"]) == {"fp32", "fp32+channels_last", "bf16", "bf16+channels_last"}
    for r in step["settings"].values():
        assert r["median_ms"] > 0 and r["skipped_steps"] == 0 and math.isfinite(r["last_total"])
        assert r["peak_mib"] is None  # no CUDA memory on the CPU
    results = json.loads((out / "epoch.json").read_text())
    assert results["environment"]["device"] == "cpu"
    epoch = results["epoch"]["settings"]
    assert set(epoch) == {"fp32", "bf16+channels_last"}
    assert all(r["sidda_epoch_s"] > 0 and r["sidda_steps"] > 0 for r in epoch.values())
    table = (out / "results.md").read_text()
    assert "| setting | median ms (q1-q3) |" in table and "| bf16+channels_last |" in table
    assert table.strip() in proc.stdout


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA message")
def test_gpu_script_without_cuda_says_what_to_install(tmp_path):
    proc = _run([], tmp_path / "results", timeout=120)
    assert proc.returncode == 2
    assert "CUDA is not available" in proc.stderr and "--index-url" in proc.stderr
    assert not (tmp_path / "results").exists()
