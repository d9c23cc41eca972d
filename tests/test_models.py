import pytest
import torch

from sidda import build_model, export_model
from sidda.models import is_exactly_equivariant_size, parse_model_name


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
    # spec 2.1 (by arithmetic): shapes/astro 1,187,315; MNIST-M 140,938
    assert _params(build_model("cnn", in_channels=1, num_classes=3, image_size=100)) == 1187315
    assert _params(build_model("cnn", in_channels=3, num_classes=10, image_size=32)) == 140938


def test_groups():
    assert build_model("d1", in_channels=1, num_classes=3, image_size=16).gspace.fibergroup.order() == 2
    assert build_model("c1", in_channels=1, num_classes=3, image_size=16).gspace.fibergroup.order() == 1
    d4 = build_model("d4", in_channels=1, num_classes=3, image_size=16)
    assert d4.gspace.fibergroup.order() == 8
    assert d4.blocks[0].out_type.size == 8 * 8  # 8 regular fields of size 2N = 8


@pytest.mark.parametrize("name", ["c4", "d4"])
def test_group_pooled_features_rotate_with_the_input(name):
    size = 32
    assert is_exactly_equivariant_size(size)
    m = build_model(name, in_channels=1, num_classes=3, image_size=size).eval()
    x = torch.randn(3, 1, size, size)
    with torch.no_grad():
        f = m.features(x)
        f_rot = m.features(torch.rot90(x, 1, (2, 3)))
        assert torch.allclose(torch.rot90(f, 1, (2, 3)), f_rot, atol=1e-4)
        if name == "d4":
            f_flip = m.features(torch.flip(x, (3,)))
            assert torch.allclose(torch.flip(f, (3,)), f_flip, atol=1e-4)
        # the plain CNN is not equivariant: the check has teeth
        cnn = build_model("cnn", in_channels=1, num_classes=3, image_size=size).eval()
        g = cnn.features(x)
        assert not torch.allclose(torch.rot90(g, 1, (2, 3)), cnn.features(torch.rot90(x, 1, (2, 3))), atol=1e-2)


def test_paper_size_is_not_exactly_equivariant():
    assert not is_exactly_equivariant_size(100)  # 100 -> 50 -> 25 -> 12 drops a row
    m = build_model("c4", in_channels=1, num_classes=3, image_size=100).eval()
    x = torch.randn(1, 1, 100, 100)
    with torch.no_grad():
        err = (torch.rot90(m.features(x), 1, (2, 3)) - m.features(torch.rot90(x, 1, (2, 3)))).abs().max()
    assert err > 1e-2


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
        for a, b in zip(m(x), e(x)):
            assert torch.allclose(a, b, atol=1e-5)


def test_bad_names_and_sizes():
    with pytest.raises(ValueError, match="unknown model"):
        parse_model_name("resnet")
    with pytest.raises(ValueError, match="unknown model"):
        parse_model_name("d0")
    with pytest.raises(ValueError, match="too small"):
        build_model("cnn", in_channels=1, num_classes=3, image_size=4)
