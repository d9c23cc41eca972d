"""Loading a checkpoint never runs code: crafted files are refused by every command that reads
one, and ``sidda runs upgrade RUN --trust`` converts the checkpoints an older sidda wrote.

The crafted files carry a ``__reduce__`` payload that creates a marker folder when unpickled;
each test first checks that a full unpickling of such a file does create it (so the payload is
live), then that the command refuses the file in one line and the marker never appears.
"""

import hashlib
import io
import os
import shutil

import numpy as np
import pytest
import torch
import yaml

from conftest import write_old_last, write_tiny_data
from sidda.cli import main
from sidda.runs import (
    CHECKPOINT_MAGIC,
    DamagedCheckpointError,
    UnsafeCheckpointError,
    load_checkpoint,
    save_checkpoint,
)


class Payload:
    """Creates ``marker`` (a folder) when a full unpickler reads it."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return os.makedirs, (self.marker,)


def _tagged(body):
    """The bytes of a checkpoint file as sidda writes it: tag, SHA-256, torch.save bytes."""
    return CHECKPOINT_MAGIC + hashlib.sha256(body).digest() + body


def _body(payload):
    buf = io.BytesIO()
    torch.save(payload, buf)
    return buf.getvalue()


def craft(path, marker, *, tagged):
    """Add a code-running payload to the checkpoint at ``path``, with a valid checksum or
    without one (as an older sidda wrote)."""
    ckpt = load_checkpoint(path)
    ckpt["extra"] = Payload(marker)
    body = _body(ckpt)
    path.write_bytes(_tagged(body) if tagged else body)
    return body


def assert_live(body, tmp_path):
    """A full unpickling of ``body`` (with its marker redirected) runs the payload."""
    control = tmp_path / "control-marker"
    ckpt = torch.load(io.BytesIO(body), weights_only=False)  # the payload ran: now check it
    assert not isinstance(ckpt["extra"], Payload)
    live = _body({**ckpt, "extra": Payload(control)})
    torch.load(io.BytesIO(live), weights_only=False)
    assert control.is_dir(), "the test's payload does not run under a full unpickling"


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A finished run (not evaluated) and its data."""
    root = tmp_path_factory.mktemp("safe")
    data = write_tiny_data(root / "data")
    cfg = {"name": "base", "out_dir": str(root / "runs"), "data": {"path": str(data)},
           "model": {"name": "cnn", "latent_dim": 16},
           "train": {"epochs": 2, "warmup": 1, "batch_size": 16, "threads": 1}}
    (root / "base.yaml").write_text(yaml.safe_dump(cfg))
    assert main(["train", "-q", "--config", str(root / "base.yaml")]) == 0
    np.save(root / "x5.npy", np.load(data / "test" / "x_test.npy")[:5])
    return root / "runs" / "base", root / "x5.npy"


def _copy(trained, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(trained[0], run)
    return run


def _commands(run, images, out):
    return {
        "evaluate": ["evaluate", str(run)],
        "predict": ["predict", str(run), str(images), "--out", str(out / "p.csv")],
        "predict-best": ["predict", str(run), str(images), "--out", str(out / "p.csv"),
                         "--checkpoint", "best_val_loss"],
        "report": ["report", str(run), "--out", str(out / "r.html")],
        "resume": ["train", "--resume", str(run)],
    }


# every command that reads the crafted file (the label-free selection of evaluate and report
# loads every model checkpoint, so a crafted best_val_loss.pt is read by default too)
CASES = [("final", c) for c in ("evaluate", "predict", "report")] + [
    ("best_val_loss", c) for c in ("evaluate", "predict-best", "report")] + [("last", "resume")]


@pytest.mark.parametrize("tagged", [True, False], ids=["tagged", "untagged"])
@pytest.mark.parametrize("name, command", CASES)
def test_a_crafted_checkpoint_is_refused_and_runs_nothing(trained, tmp_path, capsys, name,
                                                          command, tagged):
    run = _copy(trained, tmp_path)
    path = run / "checkpoints" / f"{name}.pt"
    marker = tmp_path / "PWNED"
    body = craft(path, marker, tagged=tagged)
    assert main(_commands(run, trained[1], tmp_path)[command]) == 2
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("sidda:")]
    assert len(err) == 1 and err[0].startswith(f"sidda: error: {path}: refused"), err
    assert "os.makedirs" in err[0] and "upgrade" not in err[0]
    assert not marker.exists()
    assert not (run / "metrics.json").exists() and not (tmp_path / "r.html").exists()
    assert not (tmp_path / "p.csv").exists()
    assert_live(body, tmp_path)


def test_load_checkpoint_names_what_it_refused(trained, tmp_path):
    path = tmp_path / "final.pt"
    shutil.copy(trained[0] / "checkpoints" / "final.pt", path)
    craft(path, tmp_path / "PWNED", tagged=True)
    with pytest.raises(UnsafeCheckpointError) as info:
        load_checkpoint(path)
    assert info.value.names == ["os.makedirs"] and not info.value.legacy
    assert not (tmp_path / "PWNED").exists()


def test_save_checkpoint_writes_plain_data_only(tmp_path):
    """NumPy values become tensors and numbers; any other object is refused, nothing written."""
    save_checkpoint(tmp_path / "c.pt", {"model": {"w": torch.ones(2)}, "rng": (3, (1, 2), None),
                                        "key": np.arange(3, dtype=np.uint32),
                                        "state": {"epoch": np.int64(1), "name": "x"}})
    got = load_checkpoint(tmp_path / "c.pt")
    assert got["rng"] == (3, (1, 2), None) and got["state"] == {"epoch": 1, "name": "x"}
    assert torch.equal(got["key"], torch.tensor([0, 1, 2])) and got["key"].dtype == torch.int64
    with pytest.raises(ValueError, match=r"refusing to save .*os.makedirs"):
        save_checkpoint(tmp_path / "d.pt", {"model": {}, "extra": Payload(tmp_path / "M")})
    assert not (tmp_path / "d.pt").exists() and not (tmp_path / "M").exists()


@pytest.mark.parametrize("content", [b"garbage\n", b"PK\x03\x04garbage", "cut", "tagged-cut"])
def test_an_unreadable_checkpoint_names_its_cause_and_gives_no_torch_advice(
        trained, tmp_path, capsys, content):
    """Damaged or foreign bytes: one line that says what torch found and what to do, never
    torch's paragraph about loading with ``weights_only=False`` (which can run code)."""
    run = _copy(trained, tmp_path)
    path = run / "checkpoints" / "final.pt"
    raw = path.read_bytes()
    body = raw[len(CHECKPOINT_MAGIC) + 32:]
    path.write_bytes({"cut": body[:3000], "tagged-cut": raw[:3000]}.get(content, content))
    with pytest.raises(DamagedCheckpointError) as info:
        load_checkpoint(path)
    assert info.value.path == path and "weights_only" not in str(info.value)
    assert main(["evaluate", str(run)]) == 2
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("sidda:")]
    assert len(err) == 1 and err[0].startswith(f"sidda: error: {path}: "), err
    assert "weights_only" not in err[0] and "PyTorch" not in err[0]
    assert err[0].endswith("restore it from a backup, or start the run again "
                           "(`sidda train --config ... --force`)")
    assert not (run / "metrics.json").exists()


# ---------------------------------------------------------------- sidda runs upgrade


def test_runs_upgrade_converts_an_old_run_only_with_trust(trained, tmp_path, capsys):
    run = _copy(trained, tmp_path)
    last, final = run / "checkpoints" / "last.pt", run / "checkpoints" / "final.pt"
    state = write_old_last(last)
    final.write_bytes(final.read_bytes()[len(CHECKPOINT_MAGIC) + 32:])  # no checksum
    old = last.read_bytes(), final.read_bytes()
    # refused where it is read, with the way out
    assert main(["train", "--resume", str(run)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"{last}: written by an older sidda" in err[0], err
    assert err[0].endswith(f"convert it with: sidda runs upgrade {run} --trust")
    # without --trust: explained, nothing written
    assert main(["runs", "upgrade", str(run)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "last.pt" in err[0] and "final.pt" in err[0], err
    assert f"sidda runs upgrade {run} --trust" in err[0] and "nothing was changed" in err[0]
    assert (last.read_bytes(), final.read_bytes()) == old
    # with --trust: converted, the same numbers, and the run resumes and evaluates
    assert main(["runs", "upgrade", str(run), "--trust"]) == 0
    out = capsys.readouterr().out
    assert f"converted {last}" in out and f"added a checksum to {final}" in out
    assert final.read_bytes().startswith(CHECKPOINT_MAGIC)
    new = load_checkpoint(last)
    key = new["rng"]["numpy"][1]
    assert torch.is_tensor(key) and key.dtype == torch.int64
    assert np.array_equal(key.numpy(), state[1]) and new["rng"]["numpy"][2:] == state[2:]
    got, want = load_checkpoint(final)["model"], torch.load(io.BytesIO(old[1]))["model"]
    assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in want)
    assert main(["train", "--resume", str(run), "-q"]) == 0
    assert main(["evaluate", str(run), "-q"]) == 0 and (run / "metrics.json").is_file()
    assert main(["runs", "upgrade", str(run)]) == 0  # nothing left to do
    assert "nothing to do" in capsys.readouterr().out


def test_runs_upgrade_refuses_a_crafted_file_even_with_trust(trained, tmp_path, capsys):
    run = _copy(trained, tmp_path)
    last = run / "checkpoints" / "last.pt"
    write_old_last(last)
    marker = tmp_path / "PWNED"
    ckpt = torch.load(io.BytesIO(last.read_bytes()[len(CHECKPOINT_MAGIC) + 32:]),
                      weights_only=False)  # the test's own old-format file
    ckpt["extra"] = Payload(marker)
    body = _body(ckpt)
    last.write_bytes(_tagged(body))
    before = last.read_bytes()
    assert main(["runs", "upgrade", str(run), "--trust"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"{last}: refused" in err[0] and "os.makedirs" in err[0], err
    assert last.read_bytes() == before and not marker.exists()
    assert_live(body, tmp_path)


def test_runs_upgrade_needs_a_run_directory(tmp_path, capsys):
    assert main(["runs", "upgrade", str(tmp_path), "--trust"]) == 2
    assert "not a run directory" in capsys.readouterr().err
