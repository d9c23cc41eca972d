"""Building models by name, their outputs, export and the training setup."""

import pytest
import torch

from sidda import build_model, export_model
from sidda.models import parse_model_name


def _params(m):
    return sum(p.numel() for p in m.parameters())


@pytest.mark.parametrize("name", ["cnn", "c1", "c4", "d1", "d2"])
def test_outputs_latent_and_logits(name):
    m = build_model(name, in_channels=3, num_classes=5, image_size=32).eval()
    z, logits = m(torch.randn(2, 3, 32, 32))
    assert z.shape == (2, 256) and logits.shape == (2, 5)
    # the latent is the LayerNorm output: zero mean, unit variance per row (affine at init)
    assert torch.allclose(z.mean(1), torch.zeros(2), atol=1e-5)


def test_cnn_parameter_counts_match_the_paper_layout():
    # docs/method.md "Models" (by arithmetic): shapes/astro 1,187,315; MNIST-M 140,938
    assert _params(build_model("cnn", in_channels=1, num_classes=3, image_size=100)) == 1187315
    assert _params(build_model("cnn", in_channels=3, num_classes=10, image_size=32)) == 140938


@pytest.mark.parametrize("name", ["cnn", "d4"])
def test_export_computes_the_same_function(name):
    m = build_model(name, in_channels=1, num_classes=3, image_size=32)
    m.train()
    for _ in range(2):  # move the BatchNorm running stats away from their init
        m(torch.randn(8, 1, 32, 32))
    m.eval()
    e = export_model(m)
    from escnn.nn import EquivariantModule

    assert not any(isinstance(mod, EquivariantModule) for mod in e.modules())
    x = torch.randn(4, 1, 32, 32)
    with torch.no_grad():
        for a, b in zip(m(x), e(x), strict=True):
            assert torch.allclose(a, b, atol=1e-5)


def test_bad_names_and_sizes():
    with pytest.raises(ValueError, match="unknown model"):
        parse_model_name("resnet")
    with pytest.raises(ValueError, match="unknown model"):
        parse_model_name("d0")
    with pytest.raises(ValueError, match="too small"):
        build_model("cnn", in_channels=1, num_classes=3, image_size=4)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch.compile's imports
def test_prepare_for_training():
    from sidda.models import model_state, prepare_for_training, tune_cpu_allocator

    m = build_model("cnn", in_channels=1, num_classes=3, image_size=32)
    assert prepare_for_training(m, device="cpu", fused=False) is m and m.fused is False
    assert isinstance(tune_cpu_allocator(), bool)
    assert prepare_for_training(m).fused is False  # None keeps the model's setting
    wrapped = prepare_for_training(m, fused=True, compile=True)  # lazy: nothing compiles yet
    assert wrapped is not m and m.fused is True
    assert list(model_state(wrapped)) == list(m.state_dict())


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch.compile's imports
def test_unwrap_takes_off_every_wrapper_and_nothing_else(tmp_path):
    import torch.distributed as dist
    from torch import nn

    from sidda.models import model_state, unwrap

    m = build_model("cnn", in_channels=1, num_classes=3, image_size=16)
    assert unwrap(m) is m
    assert unwrap(nn.DataParallel(m)) is m
    assert unwrap(torch.compile(m)) is m  # lazy: nothing compiles
    assert unwrap(nn.DataParallel(torch.compile(nn.DataParallel(m)))) is m

    class Holder(nn.Module):  # a model whose submodule happens to be called `module`
        def __init__(self):
            super().__init__()
            self.module = nn.Linear(2, 2)

    h = Holder()
    assert unwrap(h) is h
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'pg'}", rank=0,
                            world_size=1)
    try:
        ddp = nn.parallel.DistributedDataParallel(m)
        assert unwrap(ddp) is m and unwrap(torch.compile(ddp)) is m
        assert list(model_state(ddp)) == list(m.state_dict())  # no "module." prefix
    finally:
        dist.destroy_process_group()


def test_the_package_keeps_every_name_importers_use():
    import sidda.models

    assert all(hasattr(sidda.models, n) for n in sidda.models.__all__)
    # names imported from sidda.models elsewhere (src/, tests/, benchmarks/)
    for name in ("build_model", "export_model", "model_state", "tune_cpu_allocator",
                 "prepare_for_training", "parse_model_name", "MAX_GROUP_ORDER", "ModelConfig",
                 "is_exactly_equivariant_size", "unwrap", "_channels_last"):
        assert hasattr(sidda.models, name), name
