"""Smoke test: every benchmark script runs at its tiniest sizes, so that none can rot."""

import sys
from pathlib import Path

import pytest
import torch

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture
def one_thread():
    # tiny workloads are dominated by thread hand-offs on a shared machine
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    sys.path.insert(0, str(BENCH))
    yield
    sys.path.remove(str(BENCH))
    torch.set_num_threads(n)


@pytest.mark.parametrize(
    ("name", "expect"),
    [
        ("bench_step", "SIDDA / CE"),
        ("bench_epoch", "Speed-up of the epoch"),
        ("bench_sinkhorn", "auto picks"),
        ("bench_export", "exported, channels-last"),
        ("bench_cpu_options", "sidda default (fused + tuned malloc)"),
        ("bench_validators", "added / evaluation"),
    ],
)
def test_benchmark_runs_quick(name, expect, one_thread, capsys):
    import importlib

    text = importlib.import_module(name).main(["--quick"])
    assert expect in text
    assert "| --- |" not in text and "|---|" in text  # a markdown table came out
    capsys.readouterr()


def test_run_all_knows_every_script(one_thread):
    import importlib

    run_all = importlib.import_module("run_all")
    for name in run_all.BENCHMARKS:
        assert (BENCH / f"bench_{name}.py").is_file()
