"""Tests of sidda.train.distributed and its use in fit(): two gloo ranks on the CPU against one
process, and the torchrun command line. (One process: test_train_distributed.py; the GPU
options: test_train_device.py.)

The two-rank tests (marked ``slow``: about 15 s together) start one pair of processes for the
whole module (``ddp_results``): each rank runs every scenario and saves what it saw, and the
tests compare the files with a single-process reference computed here. One more test starts
``torchrun --nproc_per_node=2 -m sidda train`` end to end (about 10 s).

The gradient-equality model is the paper's CNN with dropout 0 and its BatchNorm layers in eval
mode. torch's SyncBatchNorm runs only on GPUs, so on the CPU each rank's BatchNorm would
normalise with its own shard's statistics and the forward pass (not just the loss) would differ
from one process; in eval mode BatchNorm is a per-sample affine map (its weight and bias still
learn), so the comparison isolates what this module does: sharding, the gathered Sinkhorn term,
the global cross-entropy and the gradient scaling under DDP. The training-steps test uses the
model as it trains (train-mode BatchNorm, dropout 0.2) and checks that the ranks stay identical.

The same holds for whole ``fit`` runs: the run compared with one process uses a model without
BatchNorm (``NoBatchNorm``), since per-rank BatchNorm statistics would make the two differ by
design on the CPU; the resume and run-directory scenarios use the paper's CNN as it trains.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import math
import multiprocessing
import os
import socket
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as torch_mp
from train_nets import NoBatchNorm, global_batch, paper_cnn, params, sidda_on_ranks

from sidda import DataConfig, LossConfig, RunConfig, TrainConfig, fit, load_domains
from sidda.losses import ETA_1_MIN, SIDDALoss
from sidda.models import build_model
from sidda.runs import load_checkpoint
from sidda.train.collectives import average_gradients, broadcast_object, shard_indices
from sidda.train.distributed import (
    distributed_cross_entropy,
    init_distributed,
    prepare_model,
    shutdown,
    unwrap,
)

N_RANKS = 2
SCENARIOS = {  # name: (source images, target images); 7 and 9 give unequal shards
    "even_global": (8, 8),
    "uneven_global": (7, 9),
}
STEPS = 3
_TORCHRUN_ENV = ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


# ---------------------------------------------------------------- what each rank runs


def _rank_gradients(ctx, n_s, n_t):
    model = prepare_model(paper_cnn(), ctx, sync_batchnorm=False)
    criterion = SIDDALoss()
    x_s, y_s, x_t = global_batch(n_s, n_t)
    i_s, i_t = shard_indices(torch.arange(n_s), ctx), shard_indices(torch.arange(n_t), ctx)
    z, logits = model(torch.cat([x_s[i_s], x_t[i_t]]))
    b = len(i_s)
    out = sidda_on_ranks(criterion, logits[:b], y_s[i_s], z[:b], z[b:], ctx)
    out.total.backward()
    return {
        "grads": {n: p.grad.clone() for n, p in unwrap(model).named_parameters()},
        "eta_grads": torch.stack([criterion.eta_1.grad, criterion.eta_2.grad]),
        "values": torch.stack([out.total.detach(), out.ce.detach(), out.da.detach()]),
        "blur": out.blur,
    }


def _rank_steps(ctx):
    """One warm-up step (cross-entropy) and two SIDDA steps, as fit() will run them."""
    model = paper_cnn(dropout=0.2, bn_eval=False)
    torch.manual_seed(1 + ctx.rank)  # a different dropout stream per rank
    model = prepare_model(model, ctx, sync_batchnorm=False)
    criterion = SIDDALoss(mode="faithful")
    opt = torch.optim.AdamW([{"params": model.parameters()}, criterion.param_group()],
                            lr=1e-2, weight_decay=1e-3)
    losses, raw_eta_grads = [], None
    for step in range(STEPS):
        x_s, y_s, x_t = global_batch(8, 8, seed=10 + step)
        i_s, i_t = shard_indices(torch.arange(8), ctx), shard_indices(torch.arange(8), ctx)
        opt.zero_grad(set_to_none=True)
        if step == 0:
            _, logits = model(x_s[i_s])
            loss = distributed_cross_entropy(logits, y_s[i_s], ctx)
        else:
            z, logits = model(torch.cat([x_s[i_s], x_t[i_t]]))
            b = len(i_s)
            loss = sidda_on_ranks(criterion, logits[:b], y_s[i_s], z[:b], z[b:], ctx).total
        loss.backward()
        if step > 0:
            raw_eta_grads = torch.stack([criterion.eta_1.grad, criterion.eta_2.grad]).clone()
        average_gradients(criterion.parameters(), ctx)
        torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)
        criterion.before_step()
        opt.step()
        criterion.after_step()
        losses.append(loss.item())
    return {
        "params": {n: p.detach().clone() for n, p in unwrap(model).named_parameters()},
        "etas": torch.stack([criterion.eta_1.detach(), criterion.eta_2.detach()]),
        "raw_eta_grads": raw_eta_grads,
        "losses": losses,
    }


def _overflow_batch():
    """Finite latents whose source-target distances overflow float32."""
    logits = torch.randn(7, 3, generator=torch.Generator().manual_seed(0))  # same everywhere
    return logits, torch.zeros(7).long(), torch.full((7, 8), 3e38), torch.full((9, 8), -3e38)


def _rank_overflow(ctx):
    """The loss on an overflowing batch, with a dynamic and a fixed blur."""
    logits, y, z_s, z_t = _overflow_batch()
    i_s, i_t = shard_indices(torch.arange(7), ctx), shard_indices(torch.arange(9), ctx)
    out = {}
    for blur in (None, 0.1):
        res = sidda_on_ranks(SIDDALoss(blur=blur), logits[i_s], y[i_s], z_s[i_s], z_t[i_t], ctx)
        out[blur] = (res.max_distance, res.blur, res.da.item(), res.ce.item())
    return out


class RankFlaky(NoBatchNorm):
    """Infinite latents on one rank only, at one training forward pass (1-based; the default
    is step 4's target pass under robust SIDDA: 3 warm-up passes, then 2 per step)."""

    def __init__(self, rank, *, bad_rank=1, bad_call=7):
        super().__init__()
        self.bad, self.calls = rank == bad_rank, 0
        self.bad_call = bad_call

    def forward(self, x):
        z, logits = super().forward(x)
        if self.training:
            self.calls += 1
            if self.bad and self.calls == self.bad_call:
                z = z * float("inf")
        return z, logits


# tiny data: 48 training images per domain, 3 steps of 16 per epoch
FIT = TrainConfig(epochs=3, warmup=1, batch_size=16, threads=1, checkpoint_every=1)
#: Robust SIDDA for the runs compared with one process. At its first alignment step the etas
#: are set to their stationary values, where their exact gradient is zero: in float32 it is
#: rounding noise whose sign depends on the reduction order, and AdamW turns it into a step of
#: up to lr either way. A stationary window of two steps (0.3 of the 6 alignment steps) sets
#: the etas again at the second step, from the mean CE and DA, and every later eta gradient is
#: a real one, so no compared value depends on the sign of rounding noise.
ROBUST = LossConfig(variant="robust", stationary_window=0.3)
#: fit() runs of other methods, on two ranks against one process.
METHOD_FITS = {"robust": ROBUST, "dan": LossConfig(method="dan")}
#: Thread counts of the one-process reference: another reduction order, as another CPU has.
REF_THREADS = (1, 2)
CRASH_AT = 4  # global step (the second step of the first SIDDA epoch)


class Crash(Exception):
    pass


def _rank_fits(ctx, data, out):
    """Whole fit() runs: against one process, a crash and resume, a one-rank non-finite
    step, and who writes the run directory."""
    import sidda.runs.history
    import sidda.train.recovery
    from sidda.experiments import train_run

    writes = []  # every checkpoint (train.recovery) and history file (runs.History) written
    save, write_csv = sidda.train.recovery.save_checkpoint, sidda.runs.history.write_csv
    sidda.train.recovery.save_checkpoint = lambda p, o: (writes.append(str(p)), save(p, o))[1]
    sidda.runs.history.write_csv = lambda p, rows: (writes.append(str(p)), write_csv(p, rows))[1]
    d = load_domains(DataConfig(path=data))
    sets = dict(val_s=d.test_s, val_t=d.test_t)
    res = {}
    model = NoBatchNorm()
    hist = fit(model, d.train_s, d.train_t, FIT, loss=ROBUST, run_dir=out / "fit", ctx=ctx,
               **sets)
    res["fit"] = {"steps": hist.steps, "epochs": hist.epochs, "params": params(model)}
    for name, loss in METHOD_FITS.items():  # two forward passes (robust), gathered batches
        model = NoBatchNorm()
        hist = fit(model, d.train_s, d.train_t, FIT, loss=loss, ctx=ctx, **sets)
        res[name] = {"steps": hist.steps, "epochs": hist.epochs, "params": params(model)}
    # with dropout and train-mode BatchNorm: the ranks' random streams must come back
    ref = paper_cnn(dropout=0.2, bn_eval=False)
    fit(ref, d.train_s, d.train_t, FIT, run_dir=out / "ref", ctx=ctx, **sets)

    def crash(event, rec):
        if event == "step" and rec["step"] == CRASH_AT:
            raise Crash

    with contextlib.suppress(Crash):
        fit(paper_cnn(dropout=0.2, bn_eval=False), d.train_s, d.train_t, FIT, run_dir=out / "cut",
            ctx=ctx, callbacks=[crash], **sets)
    resumed = paper_cnn(dropout=0.2, bn_eval=False)
    hist = fit(resumed, d.train_s, d.train_t, FIT, run_dir=out / "cut", ctx=ctx, resume=True,
               **sets)
    res["resume"] = {"ref": params(ref), "resumed": params(resumed), "steps": hist.steps}
    flaky = RankFlaky(ctx.rank)
    hist = fit(flaky, d.train_s, d.train_t, FIT, ctx=ctx)
    res["flaky"] = {"skipped": [r["skipped"] for r in hist.steps], "params": params(flaky)}
    res["writes"] = list(writes)
    cfg = RunConfig.from_dict({"name": "fit", "out_dir": str(out), "data": {"path": data},
                               "train": {"epochs": 2, "warmup": 1, "batch_size": 16}})
    try:
        train_run(cfg, ctx=ctx)
    except FileExistsError as e:  # rank 0 found the run directory; every rank raises
        res["exists"] = str(e)
    return res


def _worker(rank, port, out_dir, data):
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(N_RANKS),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    ctx = init_distributed("cpu", timeout_s=60)
    try:
        res = {"ctx": ctx, "flag": broadcast_object(f"run-of-rank-{ctx.rank}", ctx)}
        for name, (n_s, n_t) in SCENARIOS.items():
            res[name] = _rank_gradients(ctx, n_s, n_t)
        res["steps"] = _rank_steps(ctx)
        res["overflow"] = _rank_overflow(ctx)
        with warnings.catch_warnings():  # per-rank BatchNorm on the CPU: known, tested above
            warnings.simplefilter("ignore", UserWarning)
            res["fits"] = _rank_fits(ctx, data, Path(out_dir))
        torch.save(res, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        shutdown()


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def fit_data(tmp_path_factory):
    from conftest import write_tiny_data

    return str(write_tiny_data(tmp_path_factory.mktemp("fit") / "data"))


@pytest.fixture(scope="module")
def ddp_results(tmp_path_factory, fit_data):
    # forkserver with torch preloaded starts the ranks in about a second instead of two
    # concurrent cold imports of torch under spawn
    method = "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"
    if method == "forkserver":
        multiprocessing.set_forkserver_preload(["torch", "sidda.train", "sidda.models",
                                                "sidda.experiments"])
    for attempt in range(2):  # a second try in case another process took the free port
        out = tmp_path_factory.mktemp("ddp")
        try:
            torch_mp.start_processes(_worker, args=(_free_port(), str(out), fit_data),
                                     nprocs=N_RANKS, start_method=method)
            break
        except torch_mp.ProcessRaisedException:
            if attempt:
                raise
    results = [torch.load(out / f"rank{r}.pt", weights_only=False) for r in range(N_RANKS)]
    for res in results:
        res["out"] = out
    return results


# ---------------------------------------------------------------- two ranks vs one process


def _reference(n_s, n_t):
    """The same objective in one process on the concatenated global batch, without DDP."""
    model, criterion = paper_cnn(), SIDDALoss()
    x_s, y_s, x_t = global_batch(n_s, n_t)
    z, logits = model(torch.cat([x_s, x_t]))
    out = criterion(logits[:n_s], y_s, z[:n_s], z[n_s:])
    total, ce, da = out.total, out.ce, out.da
    total.backward()
    return {
        "grads": {n: p.grad.clone() for n, p in model.named_parameters()},
        "eta_grads": torch.stack([criterion.eta_1.grad, criterion.eta_2.grad]),
        "values": torch.stack([total.detach(), ce.detach(), da.detach()]),
    }


@pytest.mark.slow
def test_ranks_joined_one_gloo_group(ddp_results):
    for r, res in enumerate(ddp_results):
        ctx = res["ctx"]
        assert (ctx.rank, ctx.world_size, ctx.backend, ctx.is_main) == (r, 2, "gloo", r == 0)
        assert res["flag"] == "run-of-rank-0"  # rank 0's value reached rank 1


@pytest.mark.slow
@pytest.mark.parametrize("name", list(SCENARIOS))
def test_ddp_gradients_equal_single_process(ddp_results, name):
    ref = _reference(*SCENARIOS[name])
    for res in ddp_results:
        got = res[name]
        torch.testing.assert_close(got["values"], ref["values"], rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(got["eta_grads"], ref["eta_grads"], rtol=1e-5, atol=1e-6)
        assert got["grads"].keys() == ref["grads"].keys()
        for key, g_ref in ref["grads"].items():
            scale = float(g_ref.abs().max()) + 1e-12
            torch.testing.assert_close(got["grads"][key], g_ref, rtol=1e-4, atol=1e-5 * scale,
                                       msg=lambda m, key=key: f"{key}: {m}")
    # DDP's averaged gradients and the etas' gradients are the same bits on both ranks
    r0, r1 = (res[name] for res in ddp_results)
    assert all(torch.equal(r0["grads"][k], r1["grads"][k]) for k in r0["grads"])
    assert torch.equal(r0["eta_grads"], r1["eta_grads"])
    assert r0["blur"] == r1["blur"]


@pytest.mark.slow
def test_overflow_is_reported_alike_by_one_process_and_two_ranks(ddp_results):
    """Overflowing latent distances: one process and both ranks report a non-finite max
    distance and a NaN DA term (no ValueError anywhere), with the same CE."""
    logits, y, z_s, z_t = _overflow_batch()
    for blur in (None, 0.1):
        one = SIDDALoss(blur=blur)(logits, y, z_s, z_t)
        assert not math.isfinite(one.max_distance) and math.isnan(one.da.item())
        for res in ddp_results:
            max_distance, got_blur, da, ce = res["overflow"][blur]
            assert not math.isfinite(max_distance) and math.isnan(da), blur
            want = pytest.approx(blur) if blur is not None else math.inf
            assert got_blur == want
            assert ce == pytest.approx(one.ce.item(), rel=1e-6)


@pytest.mark.slow
def test_ddp_steps_leave_identical_weights_and_etas(ddp_results):
    r0, r1 = (res["steps"] for res in ddp_results)
    assert r0["params"].keys() == r1["params"].keys()
    for key in r0["params"]:
        assert torch.equal(r0["params"][key], r1["params"][key]), key
    assert torch.equal(r0["etas"], r1["etas"])
    assert not torch.equal(r0["etas"], torch.ones(2))  # the etas did train
    # every rank evaluated the same objective, so the etas' own gradients agreed before
    # average_gradients made sure of it
    assert torch.equal(r0["raw_eta_grads"], r1["raw_eta_grads"])
    assert r0["losses"] == r1["losses"]
    init = dict(paper_cnn(dropout=0.2, bn_eval=False).named_parameters())
    assert any(not torch.equal(init[k], v) for k, v in r0["params"].items())


STEP_VALUES = ("ce", "da", "total", "blur", "max_distance", "grad_norm", "eta_1", "eta_2")
ETAS = ("eta_1", "eta_2")


def _one_process(fit_data, loss, threads):
    """The single-process reference run of ``loss``, with ``threads`` torch threads."""
    d = load_domains(DataConfig(path=fit_data))
    model = NoBatchNorm()
    hist = fit(model, d.train_s, d.train_t, dataclasses.replace(FIT, threads=threads), loss=loss,
               val_s=d.test_s, val_t=d.test_t)
    return model, hist


def _assert_logs_match(got, want, keys):
    """Two runs' step and epoch records agree, value by value, to float32 tolerance.

    One exception, where rounding decides: the etas logged at the first alignment step. They
    are read after that step's AdamW update, and at that step the etas sit at their stationary
    values (eta_1 = sqrt(CE), eta_2 = max(sqrt(DA), eta_1)), where the exact gradient is zero:
    AdamW moves them by less than lr, in the direction of the rounding noise. So on each side
    they must lie within lr of the stationary values of the logged CE and DA (and the epoch
    mean holding them within lr / steps of each other); the next step sets them again.
    """
    steps_g, steps_w = got["steps"], want.steps
    assert len(steps_g) == len(steps_w) == 9
    first = next((i for i, r in enumerate(steps_w) if r["phase"] != "warmup"), None)
    per_epoch = len(steps_w) // len(want.epochs)
    for i, (g, w) in enumerate(zip(steps_g + got["epochs"], steps_w + want.epochs,
                                   strict=True)):
        assert (g["phase"], g.get("skipped")) == (w["phase"], w.get("skipped"))
        for key in keys:
            if w.get(key) is None:
                assert g.get(key) is None, key
            elif key in ETAS and i == first and "eta_1" in w:
                for row in (g, w):
                    e1 = max(math.sqrt(row["ce"]), ETA_1_MIN)
                    stationary = e1 if key == "eta_1" else max(math.sqrt(row["da"]), e1)
                    assert abs(row[key] - stationary) < FIT.lr, (i, key)
            elif key in ETAS and i >= len(steps_w) and w["epoch"] == steps_w[first]["epoch"]:
                assert abs(g[key] - w[key]) < 2 * FIT.lr / per_epoch + 1e-6, (i, key)
            else:
                assert g[key] == pytest.approx(w[key], rel=1e-4, abs=1e-6), (i, key)


@pytest.mark.slow
@pytest.mark.parametrize("threads", REF_THREADS)
def test_two_rank_fit_equals_one_process(ddp_results, fit_data, threads):
    """fit() on two ranks (global Sinkhorn term, no BatchNorm) logs the single-process values
    and ends with its weights, to float tolerance, whatever the reference's thread count;
    both ranks hold identical weights."""
    model, hist = _one_process(fit_data, ROBUST, threads)
    r0, r1 = (res["fits"]["fit"] for res in ddp_results)
    assert r0["steps"] == r1["steps"]  # every logged value is the same on every rank
    _assert_logs_match(r0, hist, (*STEP_VALUES, "val_acc_s", "val_ce", "val_da",
                                  "val_sinkhorn_fixed"))
    for name, p in model.named_parameters():
        assert torch.equal(r0["params"][name], r1["params"][name]), name
        torch.testing.assert_close(r0["params"][name], p.detach(), rtol=1e-4, atol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("threads", REF_THREADS)
@pytest.mark.parametrize("name", sorted(METHOD_FITS))
def test_two_rank_fit_of_other_methods_equals_one_process(ddp_results, fit_data, name, threads):
    """Robust SIDDA (one forward pass per domain, DDP's no_sync and averaged gradients) and a
    baseline (the method evaluated on the gathered global batch) on two ranks log the
    single-process values and end with its weights, whatever the reference's thread count."""
    model, hist = _one_process(fit_data, METHOD_FITS[name], threads)
    r0, r1 = (res["fits"][name] for res in ddp_results)
    assert r0["steps"] == r1["steps"]
    _assert_logs_match(r0, hist, STEP_VALUES)
    for pname, p in model.named_parameters():
        assert torch.equal(r0["params"][pname], r1["params"][pname]), pname
        if name == "dan" and pname == "features.4.bias":
            # MMD is translation invariant: its gradient on the latent bias sums to 0, so on
            # the latent units the ReLU switches off that gradient is float rounding alone
            # (~1e-8), and Adam turns it into steps of up to lr either way: only bounded here
            diff = (r0["params"][pname] - p.detach()).abs().max().item()
            assert diff <= 2 * FIT.lr * len(hist.steps), pname
            continue
        torch.testing.assert_close(r0["params"][pname], p.detach(), rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_only_rank_0_writes_and_its_checkpoint_holds_the_weights(ddp_results):
    w0, w1 = (res["fits"]["writes"] for res in ddp_results)
    assert w1 == [] and any(w.endswith("final.pt") for w in w0)
    out = ddp_results[0]["out"]
    final = load_checkpoint(out / "fit" / "checkpoints" / "final.pt")
    params = ddp_results[1]["fits"]["fit"]["params"]  # rank 1's, equal to rank 0's
    assert all(torch.equal(final["model"][k], v) for k, v in params.items())
    last = load_checkpoint(out / "fit" / "checkpoints" / "last.pt")
    assert last["world_size"] == 2 and len(last["rng_ranks"]) == 2
    assert not torch.equal(last["rng_ranks"][0]["torch"], last["rng_ranks"][1]["torch"])
    with open(out / "fit" / "history.csv") as f:
        assert len(list(csv.DictReader(f))) == 3


@pytest.mark.slow
def test_two_rank_resume_repeats_the_uninterrupted_run(ddp_results):
    """A crash mid-epoch, then resume=True on both ranks: with dropout on both ranks, the
    weights are bit-identical to the uninterrupted run's only if every rank got its own
    random state back from last.pt."""
    for res in ddp_results:
        got = res["fits"]["resume"]
        assert got["ref"].keys() == got["resumed"].keys()
        for k, v in got["ref"].items():
            assert torch.equal(got["resumed"][k], v), k
        assert [r["step"] for r in got["steps"]] == list(range(9))


@pytest.mark.slow
def test_a_non_finite_step_on_one_rank_is_skipped_on_all(ddp_results):
    r0, r1 = (res["fits"]["flaky"] for res in ddp_results)
    assert r0["skipped"] == r1["skipped"] == [None] * 4 + ["latents"] + [None] * 4
    assert all(torch.equal(r0["params"][k], r1["params"][k]) for k in r0["params"])


@pytest.mark.slow
def test_every_rank_raises_rank_0s_setup_error(ddp_results):
    for res in ddp_results:
        assert "already exists" in res["fits"]["exists"] and "--resume" in res["fits"]["exists"]


@pytest.mark.slow
def test_torchrun_trains_one_run_directory(tiny_config, tmp_path):
    """``torchrun --nproc_per_node=2 -m sidda train`` on the CPU (gloo), end to end: the run
    completes, rank 0 alone logs the epochs and writes the one run directory. (Rank 0's
    weights against one process: the in-process tests above; the CNN's per-rank BatchNorm
    statistics make a whole CNN run differ from one process on the CPU by design.)"""
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(tiny_config.override(["train.threads=1"]).to_yaml())
    env = {k: v for k, v in os.environ.items() if k not in _TORCHRUN_ENV}
    for _ in range(2):  # a second try in case another process took the free port
        proc = subprocess.run(
            [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
             f"--master_port={_free_port()}", "-m", "sidda", "train", "--config", str(cfg),
             "--device", "cpu"],
            capture_output=True, text=True, timeout=300, env=env)
        if proc.returncode == 0 or "address already in use" not in proc.stderr.lower():
            break
    assert proc.returncode == 0, proc.stderr[-3000:]
    # rank 0 alone prints the end summary, whose first line is "trained RUN in ..."
    assert sum(line.startswith("trained ") for line in proc.stdout.splitlines()) == 1
    assert proc.stderr.count("epoch 3/3 sidda") == 1  # rank 1 logs warnings only
    runs = tmp_path / "runs"
    assert [p.name for p in runs.iterdir()] == ["tiny"]
    run = runs / "tiny"
    for f in ("config.yaml", "argv.txt", "run.json", "history.csv", "history_steps.csv",
              "summary.json", "checkpoints/final.pt", "checkpoints/last.pt"):
        assert (run / f).is_file(), f
    assert RunConfig.from_yaml(run / "config.yaml").train.device == "cpu"
    with open(run / "history.csv") as f:
        assert [r["phase"] for r in csv.DictReader(f)] == ["warmup", "sidda", "sidda"]
    last = load_checkpoint(run / "checkpoints" / "last.pt")
    assert last["state"]["finished"] and last["world_size"] == 2
    final = load_checkpoint(run / "checkpoints" / "final.pt")
    model = build_model("cnn", in_channels=1, num_classes=3, image_size=16)
    model.load_state_dict(final["model"])  # a plain model: no "module." prefix


