"""Tests of sidda.train.distributed and .collectives in one process: the torchrun environment,
shards, the collectives' single-process identities, SyncBatchNorm conversion and the per-rank
random states. (Two gloo ranks against one process: test_train_ddp.py.)"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.nn import functional as F
from train_nets import params, sidda_on_ranks

from sidda.losses import SIDDALoss, sinkhorn_divergence
from sidda.methods.sidda import SIDDAMethod
from sidda.models import build_model
from sidda.train import train_step
from sidda.train.collectives import (
    DistContext,
    all_reduce_with_grad,
    average_gradients,
    broadcast_object,
    gather_with_grad,
    shard_indices,
)
from sidda.train.device import autocast_context
from sidda.train.distributed import (
    convert_sync_batchnorm,
    distributed_cross_entropy,
    init_distributed,
)
from sidda.train.recovery import restore_rng

_TORCHRUN_ENV = ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


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
    got, want = sidda_on_ranks(criterion, logits, y, z_s, z_t, ctx), criterion(
        logits, y, z_s, z_t)
    assert torch.equal(got.total, want.total) and got.blur == want.blur
    assert torch.equal(distributed_cross_entropy(logits, y, ctx), F.cross_entropy(logits, y))
    assert gather_with_grad(z_s, ctx) is z_s
    assert all_reduce_with_grad(z_t, ctx) is z_t


def test_average_gradients_is_a_no_op_in_one_process():
    p = nn.Parameter(torch.ones(3))
    p.grad = torch.tensor([1.0, 2.0, 3.0])
    average_gradients([p, nn.Parameter(torch.zeros(1))], DistContext())
    assert torch.equal(p.grad, torch.tensor([1.0, 2.0, 3.0]))
    assert broadcast_object("name", DistContext()) == "name"


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
        out = sidda_on_ranks(criterion, logits.bfloat16(), y, z_s, z_t, DistContext())
    assert seen == [(torch.float32, torch.float32, False)]
    want = criterion(logits.bfloat16().float(), y, z_s.float(), z_t.float())
    assert out.da.dtype == torch.float32 and torch.equal(out.da, want.da)
    ce = distributed_cross_entropy(logits.bfloat16(), y, DistContext())
    assert ce.dtype == torch.float32


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


def test_restore_rng_gives_each_rank_its_state_or_a_derived_seed():
    states = []
    for seed in (1, 2):
        torch.manual_seed(seed)
        states.append({"python": __import__("random").getstate(),
                       "numpy": __import__("numpy").random.get_state(),
                       "torch": torch.get_rng_state()})
    ckpt = {"rng": states[0], "rng_ranks": states, "state": {"epoch": 1, "step": 2}}
    restore_rng(ckpt, DistContext(rank=1, world_size=2), seed=0)
    assert torch.equal(torch.get_rng_state(), states[1]["torch"])
    restore_rng(ckpt, DistContext(), seed=0)  # another world size: rank 0 keeps rank 0's
    assert torch.equal(torch.get_rng_state(), states[0]["torch"])
    derived = []
    for _ in range(2):  # rank 2 of 3 had no state: a deterministic seed of its own
        restore_rng(ckpt, DistContext(rank=2, world_size=3), seed=0)
        derived.append(torch.get_rng_state())
    assert torch.equal(*derived) and not torch.equal(derived[0], states[0]["torch"])


class Overflow(nn.Module):
    """Finite latents of +-3e38 (the sign of the image): source-target distances overflow."""

    def __init__(self):
        super().__init__()
        self.head = nn.Linear(4, 3)

    def forward(self, x):
        s = x.flatten(1)[:, :4]  # (B, 4)
        return s.sign() * 3e38, self.head(s)


@pytest.mark.parametrize("blur", [None, 0.1])
def test_overflowing_distances_skip_the_step_in_one_process(blur):
    """One process reports the overflow as several ranks do (a non-finite max distance, no
    ValueError), and the step is skipped: nothing moves."""
    model, method = Overflow(), SIDDAMethod(blur=blur)
    opt = torch.optim.AdamW([{"params": model.parameters()}, *method.param_groups()], lr=1e-2)
    before = params(model)
    out = train_step(model, torch.ones(4, 1, 2, 2), torch.zeros(4).long(),
                     -torch.ones(5, 1, 2, 2), criterion=method, optimizer=opt, grad_clip=10.0)
    assert out["skipped"] == "max distance" and not math.isfinite(out["max_distance"])
    assert math.isfinite(out["ce"]) and out["da"] is None and out["total"] is None
    assert all(torch.equal(before[k], p) for k, p in model.named_parameters())
    assert method.loss.eta_1.item() == 1.0
    res = sidda_on_ranks(method.loss, torch.randn(4, 3), torch.zeros(4).long(),
                         torch.full((4, 8), 3e38), torch.full((5, 8), -3e38), DistContext())
    assert not math.isfinite(res.max_distance) and math.isnan(res.da.item())
