"""train_step knows no method by name: any DAMethod goes through its forward passes, the
generic objective and the non-finite protocol."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torch.nn import functional as F
from train_nets import paper_cnn, params

from sidda.losses import SIDDALoss
from sidda.methods import DAMethod, MethodOutput, StepOutputs
from sidda.methods.sidda import SIDDAMethod
from sidda.train import train_step

TRAIN = Path(__file__).resolve().parents[2] / "src" / "sidda" / "train"


def test_the_trainer_names_no_method_and_no_batchnorm_statistics():
    for path in sorted(TRAIN.glob("*.py")):
        text = path.read_text()
        assert "SIDDAMethod" not in text and "domain_stats" not in text, path.name


class Refuses(DAMethod):
    """A method of the test's own: CE plus the mean latent, or a step to skip."""

    name = "refuses"

    def __init__(self, refuse: bool):
        super().__init__()
        self.refuse = refuse
        self.seen: list[StepOutputs] = []

    def forward(self, out: StepOutputs) -> MethodOutput:
        self.seen.append(out)
        ce = F.cross_entropy(out.logits_s, out.y_s)
        da = out.z_t.mean() - out.z_s.mean()
        return MethodOutput(ce + da, ce, da, {"own": 1.0}, skip="budget" if self.refuse else None)


def test_any_method_gets_the_split_outputs_of_one_pass_and_may_skip_the_step():
    x = torch.randn(7, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    y = torch.tensor([0, 1, 2])
    for refuse in (False, True):
        net, method = paper_cnn(), Refuses(refuse)
        opt = torch.optim.SGD(net.parameters(), lr=0.1)
        before = params(net)
        with torch.no_grad():
            z, logits = net(x)  # BatchNorm in eval mode: the one pass is reproducible
        out = train_step(net, x[:3], y, x[3:], criterion=method, optimizer=opt, grad_clip=10.0)
        seen = method.seen[0]
        torch.testing.assert_close(seen.z_s, z[:3])
        torch.testing.assert_close(seen.logits_t, logits[3:])
        assert out["own"] == 1.0 and math.isfinite(out["ce"])
        moved = any(not torch.equal(before[k], p) for k, p in net.named_parameters())
        if refuse:
            assert out["skipped"] == "budget" and out["total"] is None and not moved
        else:
            assert out["skipped"] is None and moved
            assert out["total"] == pytest.approx(out["ce"] + out["da"], rel=1e-6)


def test_sidda_runs_its_own_forward_in_training():
    """The paper variant's step evaluates SIDDAMethod.forward: its logged values are
    SIDDALoss's on the step's one concatenated pass (the authors' computation)."""
    net, method = paper_cnn(), SIDDAMethod(variant="paper")
    x = torch.randn(10, 1, 16, 16, generator=torch.Generator().manual_seed(1))
    y = torch.tensor([0, 1, 2, 0, 1])
    z, logits = net(x)
    want = SIDDALoss(mode="faithful")(logits[:5], y, z[:5], z[5:])
    opt = torch.optim.AdamW([{"params": net.parameters()}, *method.param_groups()], lr=1e-2)
    out = train_step(net, x[:5], y, x[5:], criterion=method, optimizer=opt, grad_clip=10.0)
    assert out["total"] == want.total.item() and out["da"] == want.da.item()
    assert out["blur"] == want.blur and out["max_distance"] == want.max_distance
