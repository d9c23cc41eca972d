import math

import numpy as np
import pytest
import torch

from sidda.alignment import fixed_blur_sinkhorn, paper_js_distance


def _js_loop(p_rows, q_rows, eps=1e-6):
    out = []
    for p, q in zip(p_rows, q_rows, strict=True):
        p = [max(v, eps) for v in p]
        q = [max(v, eps) for v in q]
        m = [(a + b) / 2 for a, b in zip(p, q, strict=True)]
        kl_pm = sum(a * math.log(a / c) for a, c in zip(p, m, strict=True))
        kl_qm = sum(b * math.log(b / c) for b, c in zip(q, m, strict=True))
        out.append(math.sqrt(max(0.5 * kl_pm + 0.5 * kl_qm, 0.0)))
    return float(np.mean(out))


def test_paper_js_against_a_literal_loop():
    z_s, z_t = torch.randn(6, 5), torch.randn(8, 5)  # unequal batches: first 6 rows paired
    ref = _js_loop(z_s.tolist(), z_t[:6].tolist())
    assert float(paper_js_distance(z_s, z_t)) == pytest.approx(ref, rel=1e-5)


def test_fixed_blur_sinkhorn_separates_shifted_clouds():
    z = torch.randn(200, 8)
    near = fixed_blur_sinkhorn(z, torch.randn(200, 8))
    far = fixed_blur_sinkhorn(z, torch.randn(200, 8) + 2.0)
    assert float(far) > 10 * float(near)
    # a translation by v costs about |v|^2 / 2 (cost |x-y|^2/2); blur 1 biases it slightly
    assert float(far) == pytest.approx(0.5 * 8 * 4.0, rel=0.25)
