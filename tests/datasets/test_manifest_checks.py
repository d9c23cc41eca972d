"""What a data folder's manifest may claim: class names that fit the labels, checksums of files
inside the folder only; and a full disk while writing the arrays."""

import errno
import json
import os
from pathlib import Path

import numpy as np
import pytest
import yaml

from sidda import DataConfig, load_domains
from sidda.cli import main
from sidda.datasets import check_class_names, check_data, write_layout
from sidda.datasets.npyfiles import DataError

BAD_NAMES = [
    (["line", "rect"], r"class_names has 2 name\(s\) but the labels hold 3 classes"),
    ([f"c{i}" for i in range(50)], r"class_names has 50 name\(s\)"),
    ("line,rect,circle", r"class_names must be a list of 3 strings .*got 'line,rect,circle' "
                         r"\(str\)"),
    ([{"a": 1}, "b", "c"], r"class_names must hold strings, got \{'a': 1\} \(dict\)"),
    (["a", "a", "b"], r"class_names names 'a' twice"),
    (3, r"class_names must be a list of 3 strings .*got 3 \(int\)"),
    ([None, "b", "c"], r"class_names must hold strings, got None \(NoneType\)"),
]


def _set_names(root, names):
    path = root / "manifest.json"
    man = json.loads(path.read_text())
    man["class_names"] = names
    path.write_text(json.dumps(man))


@pytest.mark.parametrize("names, match", BAD_NAMES)
def test_class_names_that_are_not_k_strings_are_refused(tiny_data, names, match):
    _set_names(tiny_data, names)
    for load in (load_domains, check_data):
        with pytest.raises(DataError, match=r"manifest.json: " + match):
            load(DataConfig(path=str(tiny_data)))


@pytest.mark.parametrize("names, match", BAD_NAMES[:4])
def test_data_check_show_and_train_exit_2_naming_the_manifest(tiny_data, tmp_path, capsys,
                                                              names, match):
    _set_names(tiny_data, names)
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({
        "name": "r", "out_dir": str(tmp_path / "runs"), "data": {"path": str(tiny_data)},
        "model": {"name": "cnn"}, "train": {"epochs": 1, "warmup": 0, "device": "cpu"}}))
    for argv in (["data", "check", str(tiny_data)],
                 ["data", "show", str(tiny_data), "--out", str(tmp_path / "g.png")],
                 ["train", "--config", str(config), "-q"]):
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "manifest.json: class_names" in err[0], (argv, err)
    assert not (tmp_path / "g.png").exists() and not (tmp_path / "runs" / "r").exists()


def test_valid_or_absent_class_names_are_accepted(tiny_data):
    assert check_class_names(["x", "y", "z"], 3, where="m") == ["x", "y", "z"]
    assert check_class_names(None, 3, where="m") is None
    _set_names(tiny_data, None)
    assert check_data(DataConfig(path=str(tiny_data))).class_names is None


@pytest.mark.parametrize("rel", ["/etc/hostname", "../outside.npy", "train/../../outside.npy",
                                 "link/x_train.npy"])
def test_verify_reads_no_file_outside_the_folder(tiny_data, tmp_path, capsys, rel):
    outside = tmp_path / "outside.npy"
    np.save(outside, np.zeros(3))
    (tiny_data / "link").symlink_to(tmp_path, target_is_directory=True)
    path = tiny_data / "manifest.json"
    man = json.loads(path.read_text())
    man["sha256"] = {**man["sha256"], rel: "0" * 64}
    path.write_text(json.dumps(man))
    assert main(["data", "check", str(tiny_data), "--verify"]) == 2
    err = capsys.readouterr().err
    assert "a path outside the data folder" in err and "SHA-256 differs" not in err


def test_verify_still_checks_files_inside(tiny_data, capsys):
    assert main(["data", "check", str(tiny_data), "--verify"]) == 0
    assert "checksums: 8 files match" in capsys.readouterr().out


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
def test_a_full_disk_while_writing_npy_gives_enospc():
    """/dev/full fails every write with ENOSPC, as a full disk does."""
    from sidda.datasets.layout import _Chunked

    x = np.ones((64, 64, 64), dtype=np.float32)  # 1 MiB, beyond any write buffer
    with pytest.raises(OSError) as caught:
        with open("/dev/full", "wb") as f:
            np.save(_Chunked(f), x)
    assert caught.value.errno == errno.ENOSPC


_PARTIAL_WRITE = """
import resource, signal, sys
import numpy as np
from pathlib import Path
from sidda.datasets.layout import _atomic_save_npy
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (100000, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
x = np.ones((64, 64, 64), dtype=np.float32)
out = Path(sys.argv[1])
try:
    with open(out / "raw.npy", "wb") as f:
        np.save(f, x)
except OSError as e:
    print("numpy", e.errno)
try:
    _atomic_save_npy(out / "x.npy", x)
except OSError as e:
    print("sidda", e.errno, e)
"""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs POSIX resource limits")
def test_a_write_stopped_half_way_keeps_its_errno_and_leaves_no_file(tmp_path):
    """A file-size limit stops a write part way, as a disk filling up does: numpy's own
    ``tofile`` path then raises an OSError without an errno; the layout's writer keeps it."""
    import subprocess
    import sys

    src = Path(__file__).resolve().parents[2] / "src"
    env = {**os.environ, "PYTHONPATH": f"{src}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    res = subprocess.run([sys.executable, "-c", _PARTIAL_WRITE, str(tmp_path)], env=env,
                         capture_output=True, text=True, timeout=300)
    lines = res.stdout.strip().splitlines()
    assert lines[0] == "numpy None", res.stdout + res.stderr
    assert lines[1].startswith(f"sidda {errno.EFBIG} ") and "x.npy" in lines[1]
    assert "(the file is larger than this system allows)" in lines[1]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["raw.npy"]  # no partial x.npy


def test_chunked_npy_is_byte_identical_to_numpy_save(tmp_path):
    for x in (np.arange(24, dtype=np.float64).reshape(2, 3, 4), np.zeros((0, 5)),
              np.asfortranarray(np.ones((3, 7), dtype=np.int16))):
        write_layout(tmp_path / "d", {"x_train_s": x, "y_train_s": np.zeros(len(x))})
        np.save(tmp_path / "ref.npy", x)
        assert (tmp_path / "d" / "train" / "x_train.npy").read_bytes() == \
            Path(tmp_path / "ref.npy").read_bytes()
        for p in sorted((tmp_path / "d").rglob("*"), reverse=True):
            p.unlink() if p.is_file() else p.rmdir()
