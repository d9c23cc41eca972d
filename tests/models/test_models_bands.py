"""Any number of input bands: every built-in family and the export path with 5-band images."""

import pytest
import torch

from sidda import build_model, export_model

BANDS = 5  # e.g. g, r, i, z, y astronomy cutouts


def _settle(m, size):
    """Two training steps' worth of BatchNorm statistics, then eval mode."""
    m.train()
    with torch.no_grad():
        for _ in range(2):
            m(torch.randn(8, BANDS, size, size))
    return m.eval()


@pytest.mark.parametrize("name", ["cnn", "c1", "c4", "d1", "d4"])
def test_every_family_takes_five_bands(name):
    m = build_model(name, in_channels=BANDS, num_classes=3, image_size=16)
    x = torch.randn(4, BANDS, 16, 16)
    z, logits = m(x)  # training mode: the fused CPU path
    assert z.shape == (4, 256) and logits.shape == (4, 3)
    assert torch.isfinite(logits).all()
    logits.sum().backward()
    first = next(p for n, p in m.named_parameters() if n.startswith("blocks.0."))
    assert first.grad is not None and first.grad.abs().sum() > 0  # the bands reach the loss
    with pytest.raises((RuntimeError, AssertionError)):  # it really expects five (escnn asserts)
        m.eval()(torch.randn(1, 1, 16, 16))


@pytest.mark.parametrize("name", ["cnn", "c4"])
def test_fused_path_agrees_with_the_modules_on_five_bands(name):
    m = build_model(name, in_channels=BANDS, num_classes=3, image_size=16, dropout=0.0).train()
    x = torch.randn(4, BANDS, 16, 16)
    m.fused = True
    z_fused, logits_fused = m(x)
    m.fused = False
    z, logits = m(x)
    torch.testing.assert_close(z_fused, z, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(logits_fused, logits, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", ["cnn", "d4"])
def test_export_takes_five_bands(name):
    m = _settle(build_model(name, in_channels=BANDS, num_classes=3, image_size=16), 16)
    e = export_model(m)
    x = torch.randn(3, BANDS, 16, 16)
    with torch.no_grad():
        for a, b in zip(m(x), e(x), strict=True):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", ["c4", "d4"])
def test_five_band_features_rotate_with_the_input(name):
    m = _settle(build_model(name, in_channels=BANDS, num_classes=3, image_size=16), 16)
    x = torch.randn(3, BANDS, 16, 16)
    with torch.no_grad():
        f_rot = m.features(torch.rot90(x, 1, (2, 3)))
        torch.testing.assert_close(torch.rot90(m.features(x), 1, (2, 3)), f_rot,
                                   rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", ["c4", "d4"])
def test_five_band_logits_are_rotation_invariant_when_the_last_map_is_one_pixel(name):
    # 8 -> 4 -> 2 -> 1: the group-pooled map is one invariant pixel, so the head sees the same
    # input. (At larger sizes the head flattens a rotated map: logits are not invariant.)
    m = _settle(build_model(name, in_channels=BANDS, num_classes=3, image_size=8), 8)
    x = torch.randn(6, BANDS, 8, 8)
    with torch.no_grad():
        logits = m(x)[1]
        for k in (1, 2, 3):
            torch.testing.assert_close(m(torch.rot90(x, k, (2, 3)))[1], logits,
                                       rtol=1e-4, atol=1e-5)
        if name == "d4":
            torch.testing.assert_close(m(torch.flip(x, (3,)))[1], logits, rtol=1e-4, atol=1e-5)
        exported = export_model(m)  # the export keeps the invariance
        torch.testing.assert_close(exported(torch.rot90(x, 1, (2, 3)))[1], logits,
                                   rtol=1e-4, atol=1e-5)
        # the plain CNN is not invariant: the check has teeth
        cnn = _settle(build_model("cnn", in_channels=BANDS, num_classes=3, image_size=8), 8)
        assert not torch.allclose(cnn(torch.rot90(x, 1, (2, 3)))[1], cnn(x)[1], atol=1e-3)
