"""Label-free validators and diagnostics: what they add to the evaluation of a run.

A run with 2,000 source and 2,000 target test images and 1,600 validation images per domain
(the split of a 10,000-image domain: 20 % test, 20 % of the rest for validation), 100 x 100
pixels, the ``cnn`` (latent dimension 256), K = 3 and 10 classes, three saved checkpoints. The
evaluation is rebuilt from the library functions that ``evaluate_run`` calls (the per-image
files it writes are left out): for each checkpoint the forward passes of the four image sets and
its selection scores as they were before the validators (entropy, IWV, DEV); then the test
metrics of both domains, the temperature fit, the paper-compatible probes, the selection. The
additions timed against it:

* **selection validators**: the other validators (SND, IM, BNM, ClassAMI, k-NN, source
  accuracy) on the validation sets, for each of the three checkpoints;
* **diagnostics**: :func:`sidda.evaluate.label_free_diagnostics` with every validator, on the
  target test images and the source validation images.

The models are untrained (one seed per checkpoint) and the images are Gaussian noise: the
forward passes cost the same whatever the weights; K-means and the logistic regression may
converge in fewer or more steps on a trained model's latents. The three timings alternate,
repetition by repetition.

    python benchmarks/bench_validators.py            # K = 3 and 10, 2 repetitions
    python benchmarks/bench_validators.py --quick    # tiny sizes, for the smoke test
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness  # noqa: E402

from sidda.datasets import ImageSet  # noqa: E402
from sidda.evaluate import (  # noqa: E402
    VALIDATORS,
    ValidatorInputs,
    domain_metrics,
    fit_source_temperature,
    label_free_diagnostics,
    paper_compatible,
    predict,
    select_checkpoints,
    temperature_metrics,
    validator_report,
)
from sidda.evaluate.diagnostics import domain_distances  # noqa: E402
from sidda.metrics import accuracy  # noqa: E402
from sidda.models import build_model, export_model  # noqa: E402

LEGACY = ("entropy", "iwv", "dev")
ADDED = tuple(v for v in VALIDATORS if v not in LEGACY)


def _sets(n_test: int, n_val: int, size: int, k: int) -> dict[str, ImageSet]:
    g = torch.Generator().manual_seed(0)

    def images(n: int, shift: float) -> torch.Tensor:
        return torch.randn(n, 1, size, size, generator=g) * (1 + shift) + shift

    def labels(n: int) -> torch.Tensor:
        return torch.randint(0, k, (n,), generator=g)

    return {"test_s": ImageSet(images(n_test, 0.0), labels(n_test), "test_s"),
            "test_t": ImageSet(images(n_test, 0.3), labels(n_test), "test_t"),
            "val_s": ImageSet(images(n_val, 0.0), labels(n_val), "val_s"),
            "val_t": ImageSet(images(n_val, 0.3), None, "val_t")}


class Evaluation:
    """The evaluation of one run, and the two additions, on the same predictions."""

    def __init__(self, sets: dict[str, ImageSet], size: int, k: int, n_ckpt: int) -> None:
        self.sets, self.k = sets, k
        self.models = []
        for seed in range(n_ckpt):
            torch.manual_seed(seed)
            self.models.append(build_model("cnn", in_channels=1, num_classes=k,
                                           image_size=size).eval())
        self.preds: list[dict] = []

    def evaluate(self) -> None:
        """What evaluate_run does (forward passes, metrics, temperature, probes, selection)."""
        self.preds, cands = [], {}
        for i, model in enumerate(self.models):
            net = export_model(model)
            p = {key: predict(net, s, export=False) for key, s in self.sets.items()}
            self.preds.append(p)
            # checkpoint_scores as it was before the validators: entropy, IWV, DEV, accuracies
            inputs = ValidatorInputs.from_predictions(p["val_s"], p["val_t"])
            cands[f"c{i}"] = {
                "validators": validator_report(inputs, LEGACY)["scores"],
                **{f"{key}_accuracy": float(accuracy(p[key].logits, p[key].labels))
                   for key in ("test_s", "test_t")}}
        p = self.preds[0]
        temp = fit_source_temperature(p["val_s"])
        for key in ("test_s", "test_t"):
            domain_metrics(p[key], num_classes=self.k)
            if temp["value"] is not None:
                temperature_metrics(p[key].logits, p[key].labels, temp["value"])
            paper_compatible(p[key])
        select_checkpoints({n: c | {"target_accuracy": c["test_t_accuracy"]}
                            for n, c in cands.items()})

    def selection_validators(self) -> None:
        for p in self.preds:
            validator_report(ValidatorInputs.from_predictions(p["val_s"], p["val_t"]), ADDED)

    def diagnostics(self) -> dict:
        p = self.preds[0]
        counts = torch.bincount(p["val_s"].labels, minlength=self.k).tolist()
        return label_free_diagnostics(
            logits_t=p["test_t"].logits, latents_t=p["test_t"].latents,
            latents_s=p["val_s"].latents, logits_s=p["val_s"].logits,
            labels_s=p["val_s"].labels, source_class_counts=counts)

    def parts(self) -> dict[str, float]:
        """Seconds of each piece of the diagnostics, once: the domain classifier first (IWV,
        DEV and the PAD then read it), each validator, Sinkhorn and MMD."""
        p = self.preds[0]
        inputs = ValidatorInputs.from_predictions(p["val_s"], p["test_t"])
        out = {}
        t0 = time.perf_counter()
        _ = inputs.domain_fit
        out["domain classifier fit"] = time.perf_counter() - t0
        for name in VALIDATORS:
            t0 = time.perf_counter()
            validator_report(inputs, [name])
            out[name] = time.perf_counter() - t0
        t0 = time.perf_counter()
        domain_distances(inputs)
        out["Sinkhorn + MMD (+ PAD)"] = time.perf_counter() - t0
        return out


def run(ks: list[int], n_test: int, n_val: int, size: int, n_ckpt: int, reps: int) -> str:
    rows, part_rows = [], []
    for k in ks:
        ev = Evaluation(_sets(n_test, n_val, size, k), size, k, n_ckpt)
        t = harness.interleave({"evaluation": ev.evaluate, "selection": ev.selection_validators,
                                "diagnostics": ev.diagnostics}, reps)
        med = {key: harness.median(v) for key, v in t.items()}
        added = med["selection"] + med["diagnostics"]
        rows.append([k, med["evaluation"], med["selection"], med["diagnostics"],
                     f"{100 * added / med['evaluation']:.1f} %"])
        part_rows += [[k, name, s] for name, s in ev.parts().items()]
    head = (f"{n_test} + {n_test} test images, {n_val} + {n_val} validation images, "
            f"{size} x {size}, cnn, {n_ckpt} checkpoints, median of {reps}")
    return (head + "\n\n" + harness.table(
        rows, ["K", "evaluation s", "selection validators s", "diagnostics s",
               "added / evaluation"])
        + "\n\nParts of the diagnostics (one call each, seconds):\n\n"
        + harness.table(part_rows, ["K", "part", "s"]))


def main(argv: list[str] | None = None) -> str:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="tiny sizes (smoke test)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--reps", type=int, default=2)
    a = p.parse_args(argv)
    torch.set_num_threads(1 if a.quick else a.threads)
    if a.quick:
        out = run([3], n_test=24, n_val=12, size=16, n_ckpt=2, reps=1)
    else:
        out = run([3, 10], n_test=2000, n_val=1600, size=100, n_ckpt=3, reps=a.reps)
    text = (f"## Label-free validators and diagnostics against the evaluation\n\n"
            f"{harness.machine_info()}\n\n{out}\n")
    print(text)
    return text


if __name__ == "__main__":
    main()
