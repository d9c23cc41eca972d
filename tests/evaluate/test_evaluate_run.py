import json
import shutil

import numpy as np
import pytest
import torch

from sidda import RunConfig
from sidda.cli import main
from sidda.evaluate import (
    Predictions,
    domain_weights,
    importance_weighted_risk,
    isomap_embedding,
    paper_compatible,
    prediction_entropy,
    select_checkpoints,
)
from sidda.experiments import (
    evaluate_run,
    load_run_model,
    prepare_data,
    train_run,
)
from sidda.runs import RunDir, load_checkpoint, load_history

RULES = ("final", "best_val_acc", "best_val_loss", "entropy", "iwv", "dev", "oracle",
         "snd", "im", "bnm", "class_ami", "knn", "source_acc")


@pytest.fixture(scope="module")
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: threads only add overhead
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def run(tmp_path_factory, one_thread):
    from conftest import write_tiny_data

    root = tmp_path_factory.mktemp("evaluate")
    data = write_tiny_data(root / "data")
    cfg = RunConfig.from_dict({
        "name": "tiny", "out_dir": str(root / "runs"), "data": {"path": str(data)},
        "model": {"name": "cnn"},
        "train": {"epochs": 2, "warmup": 1, "batch_size": 16, "seed": 0, "threads": 1},
    })
    run_dir = train_run(cfg)
    assert main(["evaluate", str(run_dir), "-q"]) == 0
    return run_dir


def _metrics(run_dir):
    return json.loads((run_dir / "metrics.json").read_text())


# --------------------------------------------------------------------------- references


def _ece_loop(probs, labels, n_bins):
    conf, pred = probs.max(1), probs.argmax(1)
    total = 0.0
    for b in range(n_bins):
        lo, hi = b / n_bins, (b + 1) / n_bins
        inside = [i for i in range(len(conf)) if (lo < conf[i] <= hi) or (b == 0 and conf[i] == 0)]
        if inside:
            acc = np.mean([pred[i] == labels[i] for i in inside])
            total += len(inside) / len(conf) * abs(acc - np.mean(conf[inside]))
    return total


def _brier_loop(probs, labels):
    return np.mean([sum((probs[i, k] - (labels[i] == k)) ** 2 for k in range(probs.shape[1]))
                    for i in range(len(labels))])


def _softmax(z):
    z = z - z.max(1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(1, keepdims=True)


# --------------------------------------------------------------------------- evaluate_run


def test_evaluate_writes_every_metric(run, capsys):
    m = _metrics(run)
    assert m["method"] == "sidda" and m["model"] == "cnn" and m["n_bins"] == 15
    for dom in ("source", "target"):
        d = m[dom]
        for key in ("accuracy", "ece", "brier", "nll", "confusion_matrix", "report"):
            assert key in d, (dom, key)
        assert set(d["temperature_scaled"]) == {"ece", "brier", "nll"}
        for key in ("probe_accuracy", "probe_ece", "probe_brier", "network_ece", "network_brier"):
            assert np.isfinite(d["paper_compatible"][key]), (dom, key)
        for kind in ("logits", "probs", "labels", "latents"):
            assert (run / f"{kind}_{dom}.npy").is_file()
    assert m["temperature"]["value"] > 0 and m["temperature"]["fitted_on"].startswith("source")
    assert set(m["selection"]["rules"]) == set(RULES)
    assert set(m["selection"]["candidates"]) == {"final", "best_val_acc", "best_val_loss"}


def test_evaluate_prints_calibration_and_selection(run, capsys):
    copy = run.parent / "tiny_print"
    shutil.copytree(run, copy)
    assert main(["evaluate", str(copy)]) == 0
    out = capsys.readouterr().out
    assert "tar_accuracy" in out and "temperature T =" in out
    assert "paper-compatible target" in out and "oracle " in out


def test_standard_metrics_match_numpy_loops(run):
    m = _metrics(run)
    for dom in ("source", "target"):
        logits = np.load(run / f"logits_{dom}.npy").astype(np.float64)
        labels = np.load(run / f"labels_{dom}.npy")
        probs = _softmax(logits)
        assert np.allclose(probs, np.load(run / f"probs_{dom}.npy"), atol=1e-6)
        assert m[dom]["accuracy"] == pytest.approx(np.mean(probs.argmax(1) == labels))
        assert m[dom]["ece"] == pytest.approx(_ece_loop(probs, labels, 15), abs=1e-5)
        assert m[dom]["brier"] == pytest.approx(_brier_loop(probs, labels), abs=1e-5)
        nll = -np.mean(np.log(probs[np.arange(len(labels)), labels]))
        assert m[dom]["nll"] == pytest.approx(nll, abs=1e-5)
        cm = np.zeros((3, 3), int)
        for t, p in zip(labels, probs.argmax(1), strict=True):
            cm[t, p] += 1
        assert np.array_equal(m[dom]["confusion_matrix"], cm)


def test_temperature_scaled_metrics_match_numpy(run):
    m = _metrics(run)
    t = m["temperature"]["value"]
    for dom in ("source", "target"):
        logits = np.load(run / f"logits_{dom}.npy").astype(np.float64)
        labels = np.load(run / f"labels_{dom}.npy")
        probs = _softmax(logits / t)
        ts = m[dom]["temperature_scaled"]
        assert ts["ece"] == pytest.approx(_ece_loop(probs, labels, 15), abs=1e-6)
        assert ts["brier"] == pytest.approx(_brier_loop(probs, labels), abs=1e-6)
        nll = -np.mean(np.log(probs[np.arange(len(labels)), labels]))
        assert ts["nll"] == pytest.approx(nll, abs=1e-6)


def test_temperature_minimises_the_source_validation_nll(run):
    m, info = _metrics(run), json.loads((run / "run.json").read_text())
    cfg = RunConfig.from_yaml(run / "config.yaml")
    val_s = prepare_data(cfg)[1]["val_s"]
    assert m["temperature"]["n"] == len(val_s) == info["sizes"]["val_s"]
    model, _ = load_run_model(run)
    with torch.no_grad():
        z = model(val_s.x)[1].double().numpy()
    y = val_s.y.numpy()

    def nll(t):
        p = _softmax(z / t)
        return -np.mean(np.log(p[np.arange(len(y)), y]))

    t = m["temperature"]["value"]
    assert m["temperature"]["val_nll_before"] == pytest.approx(nll(1.0), abs=1e-5)
    assert m["temperature"]["val_nll_after"] == pytest.approx(nll(t), abs=1e-5)
    grid = np.exp(np.linspace(np.log(0.05), np.log(20), 400))
    assert nll(t) <= min(nll(g) for g in grid) + 1e-4
    # what `sidda predict` divides the logits by
    assert RunDir(run).temperature() == t and RunDir(run).temperature("final") == t
    assert RunDir(run).temperature("best_val_acc") is None


def test_temperature_never_reads_target_labels(run, tmp_path, monkeypatch):
    import sidda.metrics

    seen = []
    real = sidda.metrics.fit_temperature

    def spy(logits, labels, **kw):
        seen.append(torch.as_tensor(labels).clone())
        return real(logits, labels, **kw)

    monkeypatch.setattr(sidda.metrics, "fit_temperature", spy)
    before = _metrics(run)
    cfg = RunConfig.from_yaml(run / "config.yaml")
    # A copy of the data whose target labels are scrambled (train and test).
    data = tmp_path / "data"
    shutil.copytree(cfg.data.path, data)
    for split in ("train", "test"):
        f = data / split / f"y_{split}_noise.npy"
        np.save(f, (np.load(f) + 1) % 3)
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    after = evaluate_run(copy, data_path=data)
    assert len(seen) == 1 and torch.equal(seen[0], prepare_data(cfg)[1]["val_s"].y)
    assert after["temperature"] == before["temperature"]
    assert after["source"] == before["source"]
    # other data: written beside the run's own results, which stay as they were
    assert not np.array_equal(np.load(RunDir(copy).eval_dir(data).path / "labels_target.npy"),
                              np.load(run / "labels_target.npy"))
    assert np.array_equal(np.load(copy / "labels_target.npy"), np.load(run / "labels_target.npy"))
    # ... and without any target label file: same temperature, unlabelled target.
    for split in ("train", "test"):
        (data / split / f"y_{split}_noise.npy").unlink()
    bare = evaluate_run(copy, data_path=data)
    assert bare["temperature"] == before["temperature"]
    assert bare["target"]["labelled"] is False and "temperature_scaled" not in bare["target"]
    assert "oracle" not in bare["selection"]["rules"]
    assert bare["selection"]["rules"]["entropy"]["target_accuracy"] is None


def test_selection_scores_match_a_recomputation(run):
    m = _metrics(run)
    cfg = RunConfig.from_yaml(run / "config.yaml")
    val_t = prepare_data(cfg)[1]["val_t"]
    x_te = np.load(cfg.data.path + "/test/x_test_noise.npy").transpose(0, 3, 1, 2)
    y_te = np.load(cfg.data.path + "/test/y_test_noise.npy")
    for name, cand in m["selection"]["candidates"].items():
        model, _ = load_run_model(run, name, domain="target")  # its target statistics
        with torch.no_grad():
            logits = model(torch.from_numpy((x_te - 0.5) / 0.5).float())[1].numpy()
            p = _softmax(model(val_t.x)[1].double().numpy())
        assert cand["target_accuracy"] == pytest.approx(np.mean(logits.argmax(1) == y_te))
        ent = -np.sum(p * np.log(p), axis=1).mean()
        assert cand["validators"]["entropy"] == pytest.approx(-ent, abs=1e-5)
        record = load_checkpoint(run / "checkpoints" / f"{name}.pt")["record"]
        assert cand["val_acc_s"] == record["val_acc_s"] and cand["epoch"] == record["epoch"]
    rules = m["selection"]["rules"]
    best = max(c["target_accuracy"] for c in m["selection"]["candidates"].values())
    assert rules["oracle"]["target_accuracy"] == best
    for rule in RULES:
        assert rules[rule]["regret"] == pytest.approx(best - rules[rule]["target_accuracy"])


def test_evaluate_checkpoint_by_a_validator_from_the_command_line(run, tmp_path):
    copy = tmp_path / "r"
    shutil.copytree(run, copy)
    assert main(["evaluate", str(copy), "--checkpoint", "snd", "-q"]) == 0
    m = _metrics(copy)
    snd = {k: c["validators"]["snd"] for k, c in m["selection"]["candidates"].items()}
    assert m["checkpoint_rule"] == "snd" and m["checkpoint"] == max(snd, key=snd.get)
    assert m["target"]["accuracy"] == pytest.approx(
        m["selection"]["candidates"][m["checkpoint"]]["target_accuracy"])


def test_run_without_validation_split(run, tmp_path):
    cfg = RunConfig.from_yaml(run / "config.yaml").override(
        [f"out_dir={tmp_path}", "data.val_fraction=0.0"])
    m = evaluate_run(train_run(cfg))
    assert m["temperature"]["value"] is None and "val_fraction" in m["temperature"]["reason"]
    assert "temperature_scaled" not in m["target"] and "paper_compatible" in m["target"]
    assert m["selection"]["rules"] == {} and "val_fraction" in m["selection"]["reason"]


# --------------------------------------------------------------------------- pieces


def test_paper_probe_is_scored_out_of_fold():
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import brier_score_loss
    from sklearn.model_selection import StratifiedKFold
    from threadpoolctl import threadpool_limits

    rng = np.random.default_rng(0)
    z = rng.normal(size=(60, 64))  # labels carry no information about the latents
    y = np.arange(60) % 3
    logits = rng.normal(size=(60, 3))
    out = paper_compatible(Predictions(torch.from_numpy(logits).float(),
                                       torch.from_numpy(z).float(), torch.from_numpy(y)))
    assert out["probe_accuracy"] < 0.6  # out of fold, uninformative latents score at chance
    # Independent re-computation of the out-of-fold probe and the paper's formulas.
    probs = np.zeros((60, 3))
    with threadpool_limits(1):  # many tiny fits: a thread pool only slows them down
        for tr, te in StratifiedKFold(5, shuffle=True, random_state=0).split(z, y):
            clf = CalibratedClassifierCV(LogisticRegression(max_iter=1000), method="sigmoid",
                                         cv=5)
            probs[te] = clf.fit(z[tr], y[tr]).predict_proba(z[te])
    correct = probs.argmax(1) == y
    assert out["probe_accuracy"] == pytest.approx(correct.mean())
    assert out["probe_ece"] == pytest.approx(np.mean(np.abs(probs.max(1) - correct)), abs=1e-4)
    brier_k = np.mean([brier_score_loss(y == k, probs[:, k]) for k in range(3)])
    assert out["probe_brier"] == pytest.approx(brier_k, abs=1e-4)
    p = _softmax(logits)
    assert out["network_ece"] == pytest.approx(
        np.mean(np.abs(p.max(1) - (p.argmax(1) == y))), abs=1e-5)
    assert out["network_brier"] == pytest.approx(
        np.mean([brier_score_loss(y == k, p[:, k]) for k in range(3)]), abs=1e-5)


def test_paper_probe_reports_too_small_domains():
    out = paper_compatible(Predictions(torch.zeros(6, 3), torch.randn(6, 4),
                                       torch.tensor([0, 1, 2, 0, 1, 2])))
    assert "probe_error" in out and "network_ece" in out


def test_prediction_entropy_matches_numpy():
    z = np.random.default_rng(1).normal(size=(7, 4)) * 3
    p = _softmax(z)
    assert np.allclose(prediction_entropy(torch.from_numpy(z)).numpy(),
                       -(p * np.log(p)).sum(1))


def test_importance_weighted_risk_matches_the_formulas():
    rng = np.random.default_rng(2)
    w, loss = rng.gamma(2.0, 0.5, 50), rng.gamma(1.0, 1.0, 50)
    est = importance_weighted_risk(loss, w)
    wl = w * loss
    eta = -np.cov(wl, w)[0, 1] / np.var(w, ddof=1)
    assert est.iwv == pytest.approx(wl.mean())
    assert est.dev == pytest.approx(wl.mean() + eta * w.mean() - eta)
    const = importance_weighted_risk(loss, np.ones(50))
    assert const.iwv == pytest.approx(loss.mean()) and const.dev == pytest.approx(loss.mean())


def test_domain_weights_follow_the_density_ratio():
    rng = np.random.default_rng(3)
    z_s = torch.from_numpy(rng.normal(size=(200, 2)))
    same = domain_weights(z_s, torch.from_numpy(rng.normal(size=(200, 2))))
    assert abs(same.mean() - 1) < 0.2 and np.percentile(np.abs(same - 1), 90) < 0.5
    shifted = domain_weights(z_s, torch.from_numpy(rng.normal(size=(100, 2)) + [1.5, 0]))
    # True ratio grows with z_0 (log-ratio linear in z_0); weights follow, scaled by n_s/n_t.
    assert np.corrcoef(z_s[:, 0].numpy(), np.log(shifted))[0, 1] > 0.9
    with pytest.raises(ValueError, match=">= 2"):
        domain_weights(z_s, z_s[:1])


def test_select_checkpoints_rules_and_oracle():
    def cand(acc_s, total, entropy, iwv_risk, dev_risk, acc):  # validators: higher is better
        return dict(val_acc_s=acc_s, val_total=total, target_accuracy=acc,
                    validators={"entropy": -entropy, "iwv": -iwv_risk, "dev": -dev_risk})

    cands = {"final": cand(0.8, 1.0, 0.5, 2.0, 2.0, 0.60),
             "best_val_acc": cand(0.9, 1.2, 0.2, 1.5, 3.0, 0.55),
             "best_val_loss": cand(0.9, 0.7, 0.3, 1.9, 1.0, 0.70)}
    rules = select_checkpoints(cands)["rules"]
    picked = {k: v["checkpoint"] for k, v in rules.items()}
    assert picked == {"final": "final", "best_val_acc": "best_val_acc",  # tie -> first
                      "best_val_loss": "best_val_loss", "entropy": "best_val_acc",
                      "iwv": "best_val_acc", "dev": "best_val_loss", "oracle": "best_val_loss"}
    assert rules["entropy"]["regret"] == pytest.approx(0.15)
    assert "target test labels" in rules["oracle"]["note"]
    del cands["final"]["validators"]["iwv"]
    assert "iwv" not in select_checkpoints(cands)["rules"]


def test_isomap_embedding_is_sklearns_isomap_split_by_domain():
    from sklearn.manifold import Isomap

    rng = np.random.default_rng(4)
    z_s, z_t = rng.normal(size=(40, 5)), rng.normal(size=(30, 5)) + 0.3
    p_s, p_t = rng.integers(0, 3, 40), rng.integers(0, 3, 30)
    emb = isomap_embedding(z_s, z_t, p_s, p_t, n_points=25, n_neighbors=8)
    assert emb.points_s.shape == (25, 2) and emb.points_t.shape == (25, 2)
    assert np.array_equal(emb.preds_s, p_s[emb.index_s])
    ref = Isomap(n_components=2, n_neighbors=emb.n_neighbors, eigen_solver="dense").fit_transform(
        np.r_[z_s[emb.index_s], z_t[emb.index_t]])
    got = np.r_[emb.points_s, emb.points_t]
    for c in range(2):  # eigenvectors are defined up to sign
        assert np.allclose(np.abs(got[:, c]), np.abs(ref[:, c]), atol=1e-6)
    # Two far-apart clusters: the neighbour graph is widened until it is connected.
    far = isomap_embedding(z_s, z_t + 100.0, p_s, p_t, n_neighbors=5)
    assert far.n_neighbors > 5 and np.isfinite(far.points_t).all()


def test_load_history_parses_numbers_and_blanks(tmp_path):
    (tmp_path / "history.csv").write_text(
        "epoch,phase,train_da,lr\n0,warmup,,0.01\n1,sidda,2.5,0.01\n")
    rows = load_history(tmp_path)
    assert rows == [{"epoch": 0.0, "phase": "warmup", "train_da": None, "lr": 0.01},
                    {"epoch": 1.0, "phase": "sidda", "train_da": 2.5, "lr": 0.01}]
    assert load_history(tmp_path / "absent.csv") == []
