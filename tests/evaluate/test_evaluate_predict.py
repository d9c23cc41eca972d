"""The one forward pass (forward_all), predictions of new images, their CSV, the run's T."""

import csv
import json

import numpy as np
import pytest
import torch

from sidda import InputError, build_model
from sidda.datasets import ImageSet, MappedImages
from sidda.evaluate import forward_all, predict, predict_arrays
from sidda.experiments.prediction import write_predictions_csv
from sidda.runs import RunDir


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    m = build_model("cnn", in_channels=2, num_classes=4, image_size=32)
    m.train()  # as it leaves a training loop: forward_all must switch to eval itself
    return m


@pytest.fixture(scope="module")
def images():
    g = torch.Generator().manual_seed(1)
    return ImageSet(torch.randn(11, 2, 32, 32, generator=g), torch.arange(11) % 4, "random")


def _one_by_one(model, x):
    """The reference: the model in eval mode on one image at a time, in order."""
    was = model.training
    model.eval()
    zs, ls = [], []
    with torch.no_grad():
        for i in range(len(x)):
            z, logits = model(x[i : i + 1])
            zs.append(z[0])
            ls.append(logits[0])
    model.train(was)
    return torch.stack(zs), torch.stack(ls)


# --------------------------------------------------------------------------- forward_all


@pytest.mark.parametrize("batch_size", [1, 4, 11, 64])
def test_forward_all_equals_a_loop_over_single_images(model, images, batch_size):
    z_ref, l_ref = _one_by_one(model, images.x)
    z, logits = forward_all(model, images, batch_size=batch_size)
    assert z.shape == (11, 256) and logits.shape == (11, 4)
    assert z.dtype == logits.dtype == torch.float32
    torch.testing.assert_close(z, z_ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(logits, l_ref, rtol=1e-5, atol=1e-5)
    # dropout is off (eval mode): a second pass gives the same numbers
    torch.testing.assert_close(forward_all(model, images, batch_size=batch_size)[1], logits)


def test_forward_all_restores_the_mode_and_builds_no_graph(model, images):
    z, logits = forward_all(model, images, batch_size=5)
    assert model.training and not z.requires_grad and not logits.requires_grad
    model.eval()
    forward_all(model, images, batch_size=5)
    assert not model.training
    model.train()


def test_forward_all_restores_the_mode_on_error(model):
    bad = ImageSet(torch.zeros(3, 5, 32, 32), None)  # 5 channels for a 2-channel model
    with pytest.raises(RuntimeError):
        forward_all(model, bad, batch_size=2)
    assert model.training


def test_forward_all_channels_last_and_output_device(model, images):
    ref = forward_all(model, images, batch_size=4)
    nhwc = forward_all(model, images, batch_size=4, channels_last=True, out_device="cpu")
    for a, b in zip(ref, nhwc, strict=True):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-5)
        assert b.device.type == "cpu"


def test_forward_all_reads_a_memory_mapped_set(model, images, tmp_path):
    np.save(tmp_path / "x.npy", images.x.numpy())
    mapped = ImageSet(MappedImages(np.load(tmp_path / "x.npy", mmap_mode="r"),
                                   normalize="none"), None)
    for a, b in zip(forward_all(model, images, batch_size=3),
                    forward_all(model, mapped, batch_size=3), strict=True):
        torch.testing.assert_close(b, a)


def test_forward_all_on_an_equivariant_model(images):
    torch.manual_seed(0)
    m = build_model("c4", in_channels=2, num_classes=4, image_size=32)
    x = images.x[:5]
    z_ref, l_ref = _one_by_one(m, x)
    z, logits = forward_all(m, ImageSet(x, None), batch_size=2)
    torch.testing.assert_close(z, z_ref, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(logits, l_ref, rtol=1e-4, atol=1e-5)


def test_forward_all_rejects_bad_arguments(model, images):
    with pytest.raises(ValueError, match="batch_size must be an integer >= 1"):
        forward_all(model, images, batch_size=0)
    with pytest.raises(ValueError, match="no images"):
        forward_all(model, ImageSet(torch.zeros(0, 2, 32, 32), None))


def test_predict_is_forward_all_of_the_exported_model(model, images):
    pred = predict(model, images, batch_size=4)
    z_ref, l_ref = _one_by_one(model, images.x)
    torch.testing.assert_close(pred.logits, l_ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(pred.latents, z_ref, rtol=1e-5, atol=1e-5)
    assert torch.equal(pred.labels, images.y) and model.training


# --------------------------------------------------------------------------- new images


def test_predict_arrays_probabilities_and_temperature(model, images):
    x = images.x.numpy()
    out = predict_arrays(model, x, batch_size=4, latents=True)
    assert out["probs"].shape == (11, 4) and out["pred"].shape == (11,)
    assert out["probs"].dtype == np.float32 and out["pred"].dtype == np.int64
    np.testing.assert_allclose(out["probs"].sum(1), 1.0, atol=1e-6)
    _, l_ref = _one_by_one(model, images.x)
    np.testing.assert_allclose(out["probs"], l_ref.softmax(1).numpy(), atol=1e-6)
    assert np.array_equal(out["pred"], l_ref.argmax(1).numpy())
    assert out["latents"].shape == (11, 256)

    hot = predict_arrays(model, x, batch_size=4, temperature=2.5)
    assert "latents" not in hot
    np.testing.assert_allclose(hot["probs"].sum(1), 1.0, atol=1e-6)
    assert np.array_equal(hot["pred"], out["pred"])
    assert (hot["probs"].max(1) < out["probs"].max(1)).all()
    np.testing.assert_allclose(hot["probs"], (l_ref / 2.5).softmax(1).numpy(), atol=1e-6)
    # float64 arrays and tensors are accepted and give the same answer
    same = predict_arrays(model, images.x.double(), batch_size=4)
    np.testing.assert_allclose(same["probs"], out["probs"], atol=1e-6)


def test_predict_arrays_rejects_other_layouts(model):
    with pytest.raises(InputError, match=r"\(N, C, H, W\).*x\[:, None\]"):
        predict_arrays(model, np.zeros((3, 32, 32), np.float32))
    with pytest.raises(ValueError, match="temperature must be a finite number > 0"):
        predict_arrays(model, np.zeros((3, 2, 32, 32), np.float32), temperature=0.0)


def _read_csv(path):
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    return rows[0], rows[1:]


@pytest.mark.parametrize("with_latents", [False, True])
def test_predictions_csv_reads_back_as_the_arrays(model, images, tmp_path, with_latents):
    out = predict_arrays(model, images.x, temperature=1.3, latents=with_latents)
    names = [f"img_{i}.png" for i in range(10)] + ['odd, "name".fits']
    classes = ["spiral", "elliptical", "merger", "star, artefact"]
    path = write_predictions_csv(tmp_path / "pred.csv", names, out, class_names=classes)
    assert path == tmp_path / "pred.csv"
    assert [p.name for p in tmp_path.iterdir()] == ["pred.csv"]  # no temporary file left
    header, rows = _read_csv(path)
    d = out["latents"].shape[1] if with_latents else 0
    assert header == (["name", "predicted", "confidence"] + [f"p_{c}" for c in classes]
                      + [f"z_{j}" for j in range(d)])
    assert [r[0] for r in rows] == names
    assert [r[1] for r in rows] == [classes[k] for k in out["pred"]]
    probs = np.array([[float(v) for v in r[3:7]] for r in rows], dtype=np.float32)
    assert np.array_equal(probs, out["probs"])
    assert np.array_equal(np.array([float(r[2]) for r in rows], np.float32),
                          out["probs"].max(1))
    if with_latents:
        z = np.array([[float(v) for v in r[7:]] for r in rows], dtype=np.float32)
        assert np.array_equal(z, out["latents"])


def test_predictions_csv_without_class_names_and_bad_lengths(model, images, tmp_path):
    out = predict_arrays(model, images.x[:3])
    header, rows = _read_csv(write_predictions_csv(tmp_path / "p.csv", "abc", out))
    assert header[3:] == ["p_0", "p_1", "p_2", "p_3"]
    assert [int(r[1]) for r in rows] == out["pred"].tolist()
    with pytest.raises(ValueError, match="one name"):
        write_predictions_csv(tmp_path / "q.csv", ["a", "b"], out)
    with pytest.raises(ValueError, match="3 class names for 4 classes"):
        write_predictions_csv(tmp_path / "q.csv", "abc", out, class_names=["x", "y", "z"])
    assert not (tmp_path / "q.csv").exists()


def test_run_temperature_reads_metrics_json(tmp_path):
    assert RunDir(tmp_path).temperature() is None  # not evaluated
    report = {"checkpoint": "best_val_loss", "temperature": {"value": 1.75, "n": 40}}
    (tmp_path / "metrics.json").write_text(json.dumps(report))
    assert RunDir(tmp_path).temperature() == 1.75
    assert RunDir(tmp_path).temperature("best_val_loss") == 1.75
    assert RunDir(tmp_path).temperature("final") is None  # T of other weights
    for temperature in ({"value": None, "reason": "no validation"}, None):
        (tmp_path / "metrics.json").write_text(json.dumps({"temperature": temperature}))
        assert RunDir(tmp_path).temperature() is None
    (tmp_path / "metrics.json").write_text(json.dumps({"method": "sidda"}))  # calibration off
    assert RunDir(tmp_path).temperature() is None
    (tmp_path / "metrics.json").write_text(json.dumps({"temperature": {"value": -1.0}}))
    with pytest.raises(InputError, match="not a number > 0"):
        RunDir(tmp_path).temperature()
    (tmp_path / "metrics.json").write_text("{broken")
    with pytest.raises(InputError, match="evaluate the run again"):
        RunDir(tmp_path).temperature()


@pytest.mark.gpu
def test_forward_all_on_the_gpu_matches_the_cpu(images):
    torch.manual_seed(0)
    m = build_model("cnn", in_channels=2, num_classes=4, image_size=32)
    z_ref, l_ref = forward_all(m, images, batch_size=4)
    gpu = m.to("cuda", memory_format=torch.channels_last)
    z, logits = forward_all(gpu, images, batch_size=4, device="cuda", channels_last=True)
    assert z.device.type == logits.device.type == "cuda"  # training validation stays there
    torch.testing.assert_close(z.cpu(), z_ref, rtol=1e-3, atol=1e-3)
    torch.testing.assert_close(logits.cpu(), l_ref, rtol=1e-3, atol=1e-3)
    out = predict_arrays(m, images.x, device="cuda", latents=True)
    np.testing.assert_allclose(out["latents"], z_ref.numpy(), rtol=1e-3, atol=1e-3)
