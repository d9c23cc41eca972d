"""The escnn models: groups, equivariance of the group-pooled features, exact sizes."""

import pytest
import torch

from sidda import build_model
from sidda.models import is_exactly_equivariant_size


def test_groups():
    def order(name):
        m = build_model(name, in_channels=1, num_classes=3, image_size=16)
        return m.gspace.fibergroup.order()

    assert order("d1") == 2
    assert order("c1") == 1
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
        g_rot = cnn.features(torch.rot90(x, 1, (2, 3)))
        assert not torch.allclose(torch.rot90(g, 1, (2, 3)), g_rot, atol=1e-2)


def test_paper_size_is_not_exactly_equivariant():
    assert not is_exactly_equivariant_size(100)  # 100 -> 50 -> 25 -> 12 drops a row
    m = build_model("c4", in_channels=1, num_classes=3, image_size=100).eval()
    x = torch.randn(1, 1, 100, 100)
    with torch.no_grad():
        f_rot = m.features(torch.rot90(x, 1, (2, 3)))
        err = (torch.rot90(m.features(x), 1, (2, 3)) - f_rot).abs().max()
    assert err > 1e-2
