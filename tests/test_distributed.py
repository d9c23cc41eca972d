"""Tests of sidda.distributed: two gloo ranks on the CPU against one process, plus the helpers.

The two-rank tests (marked ``slow``: about 10 s together) start one pair of processes for the
whole module (``ddp_results``): each rank runs every scenario and saves what it saw, and the
tests compare the files with a single-process reference computed here.

The gradient-equality model is the paper's CNN with dropout 0 and its BatchNorm layers in eval
mode. torch's SyncBatchNorm runs only on GPUs, so on the CPU each rank's BatchNorm would
normalise with its own shard's statistics and the forward pass (not just the loss) would differ
from one process; in eval mode BatchNorm is a per-sample affine map (its weight and bias still
learn), so the comparison isolates what this module does: sharding, the gathered Sinkhorn term,
the global cross-entropy and the gradient scaling under DDP. The training-steps test uses the
model as it trains (train-mode BatchNorm, dropout 0.2) and checks that the ranks stay identical.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import socket
import warnings

import pytest
import torch
import torch.multiprocessing as torch_mp
from torch import nn
from torch.nn import functional as F

from sidda.distributed import (
    DistConfig,
    DistContext,
    all_reduce_with_grad,
    autocast_context,
    average_gradients,
    broadcast_object,
    convert_sync_batchnorm,
    distributed_cross_entropy,
    distributed_sidda_loss,
    gather_with_grad,
    init_distributed,
    prepare_model,
    shard_indices,
    shutdown,
    to_device,
    unwrap,
    use_channels_last,
)
from sidda.losses import SIDDALoss, dynamic_blur, sinkhorn_divergence
from sidda.models import build_model

N_RANKS = 2
SCENARIOS = {  # name: (source images, target images, da_scope); 7 and 9 give unequal shards
    "even_global": (8, 8, "global"),
    "uneven_global": (7, 9, "global"),
    "uneven_local": (7, 9, "local"),
}
STEPS = 3
_TORCHRUN_ENV = ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


def _model(*, dropout=0.0, bn_eval=True):
    torch.manual_seed(0)
    model = build_model("cnn", in_channels=1, num_classes=3, image_size=16, dropout=dropout)
    if bn_eval:
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.eval()
    return model


def _global_batch(n_s, n_t, *, seed=0):
    g = torch.Generator().manual_seed(seed)
    x_s = torch.randn(n_s, 1, 16, 16, generator=g)
    y_s = torch.randint(0, 3, (n_s,), generator=g)
    x_t = torch.randn(n_t, 1, 16, 16, generator=g) * 1.5 + 0.5
    return x_s, y_s, x_t


# ---------------------------------------------------------------- what each rank runs


def _rank_gradients(ctx, n_s, n_t, scope):
    model = prepare_model(_model(), ctx, sync_batchnorm=False)
    criterion = SIDDALoss()
    x_s, y_s, x_t = _global_batch(n_s, n_t)
    i_s, i_t = shard_indices(torch.arange(n_s), ctx), shard_indices(torch.arange(n_t), ctx)
    z, logits = model(torch.cat([x_s[i_s], x_t[i_t]]))
    b = len(i_s)
    out = distributed_sidda_loss(criterion, logits[:b], y_s[i_s], z[:b], z[b:], ctx,
                                 da_scope=scope)
    out.total.backward()
    return {
        "grads": {n: p.grad.clone() for n, p in unwrap(model).named_parameters()},
        "eta_grads": torch.stack([criterion.eta_1.grad, criterion.eta_2.grad]),
        "values": torch.stack([out.total.detach(), out.ce.detach(), out.da.detach()]),
        "blur": out.blur,
    }


def _rank_steps(ctx):
    """One warm-up step (cross-entropy) and two SIDDA steps, as fit() will run them."""
    model = _model(dropout=0.2, bn_eval=False)
    torch.manual_seed(1 + ctx.rank)  # a different dropout stream per rank
    model = prepare_model(model, ctx, sync_batchnorm=False)
    criterion = SIDDALoss(mode="faithful")
    opt = torch.optim.AdamW([{"params": model.parameters()}, criterion.param_group()],
                            lr=1e-2, weight_decay=1e-3)
    losses, raw_eta_grads = [], None
    for step in range(STEPS):
        x_s, y_s, x_t = _global_batch(8, 8, seed=10 + step)
        i_s, i_t = shard_indices(torch.arange(8), ctx), shard_indices(torch.arange(8), ctx)
        opt.zero_grad(set_to_none=True)
        if step == 0:
            _, logits = model(x_s[i_s])
            loss = distributed_cross_entropy(logits, y_s[i_s], ctx)
        else:
            z, logits = model(torch.cat([x_s[i_s], x_t[i_t]]))
            b = len(i_s)
            loss = distributed_sidda_loss(criterion, logits[:b], y_s[i_s], z[:b], z[b:],
                                          ctx).total
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


def _worker(rank, port, out_dir):
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(N_RANKS),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    ctx = init_distributed("cpu", timeout_s=60)
    try:
        res = {"ctx": ctx, "flag": broadcast_object(f"run-of-rank-{ctx.rank}", ctx)}
        for name, (n_s, n_t, scope) in SCENARIOS.items():
            res[name] = _rank_gradients(ctx, n_s, n_t, scope)
        res["steps"] = _rank_steps(ctx)
        torch.save(res, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        shutdown()


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ddp_results(tmp_path_factory):
    # forkserver with torch preloaded starts the ranks in about a second instead of two
    # concurrent cold imports of torch under spawn
    method = "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"
    if method == "forkserver":
        multiprocessing.set_forkserver_preload(["torch", "sidda.distributed", "sidda.models"])
    out = tmp_path_factory.mktemp("ddp")
    for attempt in range(2):  # a second try in case another process took the free port
        try:
            torch_mp.start_processes(_worker, args=(_free_port(), str(out)), nprocs=N_RANKS,
                                     start_method=method)
            break
        except torch_mp.ProcessRaisedException:
            if attempt:
                raise
    return [torch.load(out / f"rank{r}.pt", weights_only=False) for r in range(N_RANKS)]


# ---------------------------------------------------------------- two ranks vs one process


def _reference(n_s, n_t, scope):
    """The same objective in one process on the concatenated global batch, without DDP."""
    model, criterion = _model(), SIDDALoss()
    x_s, y_s, x_t = _global_batch(n_s, n_t)
    z, logits = model(torch.cat([x_s, x_t]))
    z_s, z_t = z[:n_s], z[n_s:]
    if scope == "global":
        out = criterion(logits[:n_s], y_s, z_s, z_t)
        total, ce, da = out.total, out.ce, out.da
    else:  # the mean over the ranks' shards of their own dynamic-blur divergence
        ce, das = F.cross_entropy(logits[:n_s], y_s), []
        for r in range(N_RANKS):
            ctx = DistContext(rank=r, world_size=N_RANKS)
            a = z_s[shard_indices(torch.arange(n_s), ctx)]
            b = z_t[shard_indices(torch.arange(n_t), ctx)]
            das.append(sinkhorn_divergence(a, b, blur=dynamic_blur(a, b)))
        da = torch.stack(das).mean()
        total = criterion.weigh(ce, da)
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
    init = dict(_model(dropout=0.2, bn_eval=False).named_parameters())
    assert any(not torch.equal(init[k], v) for k, v in r0["params"].items())


# ---------------------------------------------------------------- one process


@pytest.fixture
def no_torchrun_env(monkeypatch):
    for var in _TORCHRUN_ENV:
        monkeypatch.delenv(var, raising=False)
    return monkeypatch


def test_single_process_context(no_torchrun_env):
    ctx = init_distributed("cpu")
    assert ctx == DistContext(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"),
                              backend=None)
    assert ctx.is_main and not ctx.is_distributed
    assert not torch.distributed.is_initialized()
    assert init_distributed("auto").device.type in ("cpu", "cuda")


def test_env_errors_name_torchrun(no_torchrun_env):
    no_torchrun_env.setenv("WORLD_SIZE", "2")
    with pytest.raises(ValueError, match="RANK.*torchrun"):
        init_distributed("cpu")
    no_torchrun_env.setenv("WORLD_SIZE", "two")
    with pytest.raises(ValueError, match="WORLD_SIZE='two'.*torchrun"):
        init_distributed("cpu")
    for var, value in dict(WORLD_SIZE="2", RANK="2", LOCAL_RANK="0", MASTER_ADDR="127.0.0.1",
                           MASTER_PORT="1").items():
        no_torchrun_env.setenv(var, value)
    with pytest.raises(ValueError, match="do not fit WORLD_SIZE=2"):
        init_distributed("cpu")
    assert not torch.distributed.is_initialized()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA error")
def test_cuda_device_without_cuda_is_an_error(no_torchrun_env):
    with pytest.raises(ValueError, match="CUDA is not available"):
        init_distributed("cuda")


@pytest.mark.parametrize("n", [0, 1, 5, 8, 9, 128])
@pytest.mark.parametrize("world", [1, 2, 3])
def test_shards_partition_the_global_batch(n, world):
    idx = torch.randperm(n)
    shards = [shard_indices(idx, DistContext(rank=r, world_size=world)) for r in range(world)]
    assert torch.equal(torch.cat(shards), idx)  # in order: gathered latents keep it too
    sizes = [len(s) for s in shards]
    assert max(sizes) - min(sizes) <= 1 and sizes == sorted(sizes, reverse=True)


def test_single_process_is_the_plain_loss():
    ctx = DistContext()
    criterion = SIDDALoss()
    logits, y = torch.randn(6, 3), torch.randint(0, 3, (6,))
    z_s, z_t = torch.randn(6, 8), torch.randn(5, 8)
    got, want = distributed_sidda_loss(criterion, logits, y, z_s, z_t, ctx), criterion(
        logits, y, z_s, z_t)
    assert torch.equal(got.total, want.total) and got.blur == want.blur
    assert torch.equal(distributed_cross_entropy(logits, y, ctx), F.cross_entropy(logits, y))
    assert gather_with_grad(z_s, ctx) is z_s
    assert all_reduce_with_grad(z_t, ctx) is z_t
    with pytest.raises(ValueError, match="da_scope"):
        distributed_sidda_loss(criterion, logits, y, z_s, z_t, ctx, da_scope="rank")


def test_average_gradients_is_a_no_op_in_one_process():
    p = nn.Parameter(torch.ones(3))
    p.grad = torch.tensor([1.0, 2.0, 3.0])
    average_gradients([p, nn.Parameter(torch.zeros(1))], DistContext())
    assert torch.equal(p.grad, torch.tensor([1.0, 2.0, 3.0]))
    assert broadcast_object("name", DistContext()) == "name"


def test_autocast_context_logic(monkeypatch):
    assert isinstance(autocast_context("cpu"), contextlib.nullcontext)
    assert isinstance(autocast_context("cuda", enabled=False), contextlib.nullcontext)
    cpu = autocast_context("cpu", cpu_bf16=True)
    assert isinstance(cpu, torch.autocast) and cpu.fast_dtype == torch.bfloat16
    with warnings.catch_warnings():  # torch warns that CUDA is absent when it is
        warnings.simplefilter("ignore")
        cuda = autocast_context(torch.device("cuda"))
    assert isinstance(cuda, torch.autocast)
    assert (cuda.device, cuda.fast_dtype) == ("cuda", torch.bfloat16)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    with pytest.warns(UserWarning, match="does not support bf16"):
        fallback = autocast_context("cuda")
    assert isinstance(fallback, contextlib.nullcontext)


def test_sinkhorn_runs_in_float32_under_autocast(monkeypatch):
    import sidda.losses

    seen = []

    def recorder(z_s, z_t, **kw):
        seen.append((z_s.dtype, z_t.dtype, torch.is_autocast_enabled("cpu")))
        return sinkhorn_divergence(z_s, z_t, **kw)

    monkeypatch.setattr(sidda.losses, "sinkhorn_divergence", recorder)
    criterion = SIDDALoss()
    logits, y = torch.randn(8, 3), torch.randint(0, 3, (8,))
    z_s, z_t = torch.randn(8, 16).bfloat16(), torch.randn(8, 16).bfloat16()
    with autocast_context("cpu", cpu_bf16=True):
        out = distributed_sidda_loss(criterion, logits.bfloat16(), y, z_s, z_t, DistContext())
    assert seen == [(torch.float32, torch.float32, False)]
    want = criterion(logits.bfloat16().float(), y, z_s.float(), z_t.float())
    assert out.da.dtype == torch.float32 and torch.equal(out.da, want.da)
    ce = distributed_cross_entropy(logits.bfloat16(), y, DistContext())
    assert ce.dtype == torch.float32


def test_to_device_and_channels_last():
    x, y = torch.randn(4, 1, 16, 16), torch.arange(4)
    xc = to_device(x, torch.device("cpu"), channels_last=True)
    assert xc.is_contiguous(memory_format=torch.channels_last) and torch.equal(xc, x)
    assert torch.equal(to_device(y, torch.device("cpu"), channels_last=True), y)
    model = _model().eval()
    fast = prepare_model(_model().eval(), DistContext(), channels_last=True)
    assert unwrap(fast) is fast  # one process: no DDP wrapper
    torch.testing.assert_close(fast(xc)[1], model(x)[1], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ["cnn", pytest.param("d4", marks=pytest.mark.slow)])
def test_convert_sync_batchnorm_keeps_state_and_function(name):
    # escnn's SequentialModule refuses torch's own conversion (it re-adds every child)
    model = build_model(name, in_channels=1, num_classes=3, image_size=16).eval()
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.running_mean.add_(0.3)
    x = torch.randn(2, 1, 16, 16)
    want, state = model(x)[1], model.state_dict()
    synced = convert_sync_batchnorm(model)
    kinds = [type(m) for m in synced.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    assert kinds == [nn.SyncBatchNorm] * 3
    assert synced.state_dict().keys() == state.keys()  # checkpoints load into plain models
    torch.testing.assert_close(synced(x)[1], want, rtol=0, atol=0)


def test_dist_config():
    assert DistConfig().da_scope == "global"
    with pytest.raises(ValueError, match="da_scope"):
        DistConfig(da_scope="shard")
    assert not use_channels_last(DistConfig(), torch.device("cpu"))
    assert use_channels_last(DistConfig(), torch.device("cuda"))
    assert not use_channels_last(DistConfig(bf16=False), torch.device("cuda"))
    assert use_channels_last(DistConfig(channels_last=True), torch.device("cpu"))


@pytest.mark.gpu
def test_bf16_forward_float32_loss_on_cuda():
    dev = torch.device("cuda")
    model = prepare_model(_model(), DistContext(device=dev), channels_last=True)
    criterion = SIDDALoss().to(dev)
    x_s, y_s, x_t = _global_batch(8, 8)
    x = to_device(torch.cat([x_s, x_t]), dev, channels_last=True, pin_memory=True)
    with autocast_context(dev):
        z, logits = model(x)
    assert logits.dtype == torch.bfloat16
    out = distributed_sidda_loss(criterion, logits[:8], y_s.to(dev), z[:8], z[8:],
                                 DistContext(device=dev))
    assert out.da.dtype == torch.float32 and torch.isfinite(out.total)
    out.total.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())
