"""Real-set layouts, memory-mapped loading, the image-folder converter, `data check`/`show`."""

import json
import tracemalloc

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from conftest import _blobs
from sidda import DataConfig, DataError, InputError, RunConfig, load_domains
from sidda.cli import main
from sidda.configs import CONFIG_DIR
from sidda.datasets import (
    MappedImages,
    check_data,
    import_image_folders,
    load_split,
    resolve_data_config,
    scan_images,
    write_layout,
)
from sidda.plots import sample_grid

CONFIGS = CONFIG_DIR / "paper"
FAST = ["model.name=cnn", "train.epochs=2", "train.warmup=1", "train.batch_size=16",
        "train.milestones=[1]", "train.device=cpu"]


def _domains(*, n_train=48, n_test=24, size=16, channels=1, seed=0, dtype=np.float64):
    """Blob arrays for all eight keys; the target is shifted by +0.5."""
    rng = np.random.default_rng(seed)
    out = {}
    for split, n in (("train", n_train), ("test", n_test)):
        for dom, shift in (("s", 0.0), ("t", 0.5)):
            x, y = _blobs(n, size, shift=shift, rng=rng)
            out[f"x_{split}_{dom}"] = np.repeat(x, channels, axis=3).astype(dtype)
            out[f"y_{split}_{dom}"] = y.astype(np.float64)  # float labels, as on Zenodo
    return out


def _write_mrssc2(root, arrays, *, target_labels=True):
    """Flat files exactly as the MRSSC2 zip has them (no manifest)."""
    root.mkdir(parents=True)
    for split in ("train", "test"):
        for dom, name in (("s", "source"), ("t", "target")):
            np.save(root / f"{name}_X_{split}.npy", arrays[f"x_{split}_{dom}"])
            if dom == "s" or target_labels:
                np.save(root / f"{name}_y_{split}.npy", arrays[f"y_{split}_{dom}"])
    return root


def _train(tmp_path, config, data, *overrides):
    args = ["train", "--config", str(config), "-q", "--set", f"data.path={data}",
            f"out_dir={tmp_path / 'runs'}", "name=r", *FAST, *overrides]
    assert main(args) == 0
    return tmp_path / "runs" / "r"


def _predict_test(run, cfg):
    """The trained model's predictions on both test sets, loaded as `cfg` says."""
    from sidda.evaluate import predict
    from sidda.experiments import load_run_model

    model, _ = load_run_model(run)
    d = load_domains(cfg, splits=("test",))
    return d, [predict(model, s) for s in (d.test_s, d.test_t)]


# ------------------------------------------------------------------ memory-mapped images


@pytest.fixture
def big_file(tmp_path):
    """A 3.8 MB float64 NHWC file (400 x 20 x 20 x 3), larger than a 1 MB budget."""
    x = np.random.default_rng(0).random((400, 20, 20, 3))
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", np.arange(400) % 3)
    return tmp_path / "x.npy", tmp_path / "y.npy"


@pytest.mark.parametrize("image_size", [None, 18])  # 400x3x18x18 float32 > 1 MB
def test_memory_mapped_equals_in_memory(big_file, image_size):
    mem = load_split(*big_file, image_size=image_size)
    mapped = load_split(*big_file, image_size=image_size, memory_budget_mb=1)
    assert isinstance(mem.x, torch.Tensor) and not mem.memory_mapped
    assert isinstance(mapped.x, MappedImages) and isinstance(mapped.x.array, np.memmap)
    assert mapped.shape == mem.shape and len(mapped) == 400 and mapped.x.dtype == torch.float32
    idx = torch.tensor([399, 5, 0, 5, 123, 7])  # unsorted, with a repeat
    assert torch.equal(mapped.x[idx], mem.x[idx])
    assert torch.equal(mapped.x[3], mem.x[3]) and torch.equal(mapped.x[10:20], mem.x[10:20])
    sub_mem, sub_map = mem.subset(idx), mapped.subset(idx)
    assert sub_map.memory_mapped and sub_map.x.array is mapped.x.array  # remapped, not copied
    j = torch.tensor([2, 0, 5])
    assert torch.equal(sub_map.x[j], sub_mem.x[j]) and torch.equal(sub_map.y, sub_mem.y)


def test_memory_mapped_load_never_reads_the_file_whole(big_file):
    size = big_file[0].stat().st_size
    tracemalloc.start()
    try:
        s = load_split(*big_file, memory_budget_mb=1)  # scans all pixels for NaN/inf
        _, peak_load = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        s.x[torch.arange(0, 400, 7)]
        _, peak_batch = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak_load < size / 8, (peak_load, size)
    assert peak_batch < size / 4, (peak_batch, size)


def test_memory_mapped_nonfinite_pixels_are_found_beyond_the_first_chunk(tmp_path):
    x = np.zeros((400, 20, 20, 3))
    x[350, 3, 4, 1] = np.inf
    np.save(tmp_path / "x.npy", x)
    with pytest.raises(DataError, match=r"x.npy: image 350 has non-finite"):
        load_split(tmp_path / "x.npy", None, require_labels=False, memory_budget_mb=1)
    with pytest.raises(DataError, match=r"x.npy: image 350 has non-finite"):
        load_split(tmp_path / "x.npy", None, require_labels=False)  # in-memory path too


def test_pixels_the_normalisation_overflows_are_named_as_such(tmp_path):
    """3e38 is a finite float32; ``half`` ((x - 0.5) / 0.5) takes it past the largest one."""
    x = np.zeros((4, 8, 8, 1), np.float32)
    x[2, 1, 1, 0] = 3e38
    with np.errstate(over="ignore"):
        halved = (x - np.float32(0.5)) / np.float32(0.5)
    assert np.isfinite(x).all() and not np.isfinite(halved).all()
    np.save(tmp_path / "x.npy", x)
    with pytest.raises(DataError, match=r"x.npy: image 2 has pixels up to 3e\+38, which overflow "
                                        r"float32 under data.normalize=half"):
        load_split(tmp_path / "x.npy", None, require_labels=False)
    kept = load_split(tmp_path / "x.npy", None, require_labels=False, normalize="none")
    assert float(kept.x.max()) == pytest.approx(3e38, rel=1e-6)


def test_memory_mapping_is_announced_only_when_the_budget_is_exceeded(tmp_path, caplog):
    import logging

    caplog.set_level(logging.INFO, logger="sidda")
    np.save(tmp_path / "x.npy", np.zeros((600, 20, 20, 3), np.float32))  # 2.7 MB as float32
    assert load_split(tmp_path / "x.npy", None, require_labels=False,
                      memory_budget_mb=0).memory_mapped  # asked for: said nothing
    assert not [r for r in caplog.records if "memory_budget_mb" in r.getMessage()]
    assert load_split(tmp_path / "x.npy", None, require_labels=False,
                      memory_budget_mb=1).memory_mapped
    said = [r.getMessage() for r in caplog.records if "memory_budget_mb" in r.getMessage()]
    assert len(said) == 1 and "3 MB as float32 exceeds data.memory_budget_mb=1" in said[0]


def test_scan_images_matches_numpy():
    x = np.random.default_rng(1).normal(size=(50, 9, 9))
    s = scan_images(x, chunk_bytes=1000)
    assert s.first_nonfinite is None
    assert s.min == pytest.approx(x.min(), rel=1e-6) and s.max == pytest.approx(x.max(), rel=1e-6)
    assert s.mean == pytest.approx(x.mean(), abs=1e-6)
    x[31, 0, 0] = 1e300  # finite in float64, inf in float32
    assert scan_images(x, chunk_bytes=1000).first_nonfinite == 31


def test_gz_evo_layout_memory_mapped_trains_end_to_end(tmp_path):
    data = write_layout(tmp_path / "gz", _domains(channels=3), source_suffix="_sdss",
                        target_suffix="_desi", manifest={"generator": "tiny-gz"})
    d = load_domains(DataConfig(path=str(data), source_suffix="_sdss", target_suffix="_desi",
                                memory_budget_mb=0))
    assert d.train_s.memory_mapped and d.test_t.memory_mapped and d.in_channels == 3
    run = _train(tmp_path, CONFIGS / "gz_evo_cnn.yaml", data, "data.memory_budget_mb=0")
    man = json.loads((run / "data_manifest.json").read_text())
    assert man["generator"] == "tiny-gz" and man["source_suffix"] == "_sdss"
    cfg = RunConfig.from_yaml(run / "config.yaml").data
    assert cfg.memory_budget_mb == 0
    d, (p_s, p_t) = _predict_test(run, cfg)
    assert d.test_t.memory_mapped and p_t.logits.shape == (24, 3) and p_s.labels is not None


# -------------------------------------------------------------------------- MRSSC2 layout


def test_mrssc2_layout_trains_end_to_end(tmp_path):
    data = _write_mrssc2(tmp_path / "mrssc2", _domains(size=20, channels=3),
                         target_labels=False)
    d = load_domains(DataConfig(path=str(data), layout="mrssc2", image_size=16))
    assert d.train_t.y is None and d.test_s.y is not None and d.image_size == 16
    assert d.manifest["generator"] is None and "no manifest.json" in d.manifest["note"]
    run = _train(tmp_path, CONFIGS / "mrssc2_cnn.yaml", data, "data.image_size=16")
    man = json.loads((run / "data_manifest.json").read_text())
    assert man["layout"] == "mrssc2" and man["counts_per_class"]["y_train_s"] == [16, 16, 16]
    _, (p_s, p_t) = _predict_test(run, RunConfig.from_yaml(run / "config.yaml").data)
    assert p_t.labels is None and p_s.logits.shape == (24, 3)


def test_mrssc2_configs_are_the_papers():
    for model in ("cnn", "d4"):
        cfg = RunConfig.from_yaml(CONFIGS / f"mrssc2_{model}.yaml")
        assert cfg.data.layout == "mrssc2" and cfg.data.image_size == 100
        assert cfg.model.name == model and cfg.train.epochs == 100 and cfg.train.warmup == 30
        assert cfg.train.milestones == (33, 66)


def test_wrong_layout_or_suffix_says_what_the_folder_holds(tmp_path):
    mrssc2 = _write_mrssc2(tmp_path / "m", _domains())
    with pytest.raises(DataError, match="set data.layout: mrssc2"):
        load_domains(DataConfig(path=str(mrssc2)))
    gz = write_layout(tmp_path / "gz", _domains(), source_suffix="_sdss", target_suffix="_desi")
    with pytest.raises(DataError, match=r"x_train.npy: file not found.*\['_desi', '_sdss'\]"):
        load_domains(DataConfig(path=str(gz)))


@pytest.mark.parametrize("kw, match", [
    ({"layout": "hdf5"}, "data.layout must be one of"),
    ({"memory_budget_mb": -1}, "memory_budget_mb must be >= 0"),
])
def test_data_config_validation(kw, match):
    with pytest.raises(ValueError, match=match):
        DataConfig(**kw)
    assert DataConfig(layout="mrssc2", source_suffix="", target_suffix="").layout == "mrssc2"


def test_resolve_data_config(tmp_path):
    gz = write_layout(tmp_path / "gz", _domains(), source_suffix="_sdss", target_suffix="_desi")
    (gz / "manifest.json").unlink()
    cfg = resolve_data_config(gz)
    assert (cfg.layout, cfg.source_suffix, cfg.target_suffix) == ("zenodo", "_sdss", "_desi")
    assert resolve_data_config(_write_mrssc2(tmp_path / "m", _domains())).layout == "mrssc2"
    np.save(gz / "train" / "x_train_other.npy", np.zeros((2, 8, 8)))
    with pytest.raises(DataError, match="several target files.*--target-suffix"):
        resolve_data_config(gz)
    with pytest.raises(DataError, match="not a data folder"):
        resolve_data_config(tmp_path)


# ------------------------------------------------------------------------------ converter


def _image_folders(root, *, n=6, size=(14, 12), target="labelled", mode="RGB"):
    """Source and target folders of class sub-folders; class k is bright in channel k."""
    rng = np.random.default_rng(0)
    for dom in ("source", "target"):
        for k, name in enumerate(("cat", "dog", "owl")):
            d = root / dom / name if (dom == "source" or target == "labelled") else root / dom
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                a = (rng.random((size[1], size[0], 3)) * 60).astype(np.uint8)
                a[:, :, k] += 180
                img = Image.fromarray(a).convert(mode)
                img.save(d / f"{name}{i}.{'png' if i % 2 else 'jpg'}")
    return root / "source", root / "target"


def test_import_folder_labelled_target(tmp_path):
    src, tgt = _image_folders(tmp_path / "img")
    out = import_image_folders(src, tgt, tmp_path / "d", image_size=10, random_state=3)
    man = json.loads((out / "manifest.json").read_text())
    assert man["class_names"] == ["cat", "dog", "owl"] and man["channels"] == 3
    assert man["generator"] == "image-folder" and man["seed"] == 3
    assert man["counts_per_class"]["y_test_t"] == [2, 2, 2]  # ceil(6 * 0.2) per class
    x = np.load(out / "train" / "x_train.npy")
    y = np.load(out / "train" / "y_train.npy")
    assert x.shape == (12, 10, 10, 3) and x.dtype == np.float32 and 0 <= x.min() <= x.max() <= 1
    assert np.all(x.mean((1, 2)).argmax(1) == y)  # class k is bright in channel k
    rows = (out / "index.csv").read_text().splitlines()
    assert rows[0] == "domain,split,index,label,file" and len(rows) == 1 + 36
    same = import_image_folders(src, tgt, tmp_path / "d2", image_size=10, random_state=3)
    for f in ("test/y_test.npy", "train/x_train_target.npy"):
        assert np.array_equal(np.load(same / f), np.load(out / f))


def test_import_folder_unlabelled_grey_noncsquare(tmp_path):
    src, tgt = _image_folders(tmp_path / "img", size=(20, 12), target="flat", mode="L")
    out = import_image_folders(src, tgt, tmp_path / "d")  # size from the 12x12 central crops
    assert np.load(out / "train" / "x_train.npy").shape == (12, 12, 12, 1)
    assert not (out / "train" / "y_train_target.npy").exists()
    assert np.load(out / "train" / "x_train_target.npy").shape == (14, 12, 12, 1)  # 18 - 4
    d = load_domains(resolve_data_config(out))
    assert d.train_t.y is None and d.num_classes == 3 and d.in_channels == 1


def test_import_folder_16_bit_png_scales_to_unit_range(tmp_path):
    src, tgt = _image_folders(tmp_path / "img", n=2, size=(8, 8))
    Image.fromarray(np.full((8, 8), 65535, dtype=np.uint16)).save(src / "cat" / "cat0.png")
    out = import_image_folders(src, tgt, tmp_path / "d", channels=1)
    x = np.concatenate([np.load(out / f) for f in ("train/x_train.npy", "test/x_test.npy")])
    assert x.max() == pytest.approx(1.0) and x.shape[-1] == 1


def _corrupt(src, tgt):
    (src / "dog" / "dog1.png").write_bytes(b"\x89PNG not really")


@pytest.mark.parametrize("damage, match", [
    (lambda s, t: [p.unlink() for p in (s / "owl").iterdir()], r"owl: class folder holds no"),
    (_corrupt, r"dog1.png: unreadable image"),
    (lambda s, t: (s / "dog" / "dog0.jpg").write_bytes((s / "dog" / "dog0.jpg").read_bytes()[:300]),
     r"dog0.jpg: unreadable image"),  # truncated
    (lambda s, t: (t / "owl").rename(t / "eagle"), r"only in source \['owl'\], only in target"),
    (lambda s, t: Image.new("L", (8, 8)).save(t / "stray.png"), "both image files"),
    (lambda s, t: [p.unlink() for p in list(s.glob("*/*"))], "class folder holds no images"),
    (lambda s, t: [p.unlink() for p in list(s.glob("cat/*"))[1:]], "class 0 has 1 image"),
])
def test_import_folder_errors_name_the_problem(tmp_path, damage, match):
    src, tgt = _image_folders(tmp_path / "img", n=3)
    damage(src, tgt)
    with pytest.raises(DataError, match=match):
        import_image_folders(src, tgt, tmp_path / "d", image_size=8)
    assert not (tmp_path / "d").exists()


def test_import_folder_empty_flat_and_tiny(tmp_path):
    (tmp_path / "empty").mkdir()
    src, tgt = _image_folders(tmp_path / "img", n=2, size=(6, 6))
    with pytest.raises(DataError, match="empty: source folder holds no images"):
        import_image_folders(tmp_path / "empty", tgt, tmp_path / "d")
    with pytest.raises(DataError, match="must hold one sub-folder of images per class"):
        import_image_folders(src / "cat", tgt, tmp_path / "d")
    with pytest.raises(DataError, match="6x6 pixels are too small"):
        import_image_folders(src, tgt, tmp_path / "d")


@pytest.mark.parametrize("out, match", [("notes.txt", r"--out .*notes.txt is a file"),
                                        ("notes.txt/d", r"notes.txt is a file, not a folder")])
def test_import_folder_out_through_a_file_is_refused(tmp_path, out, match):
    src, tgt = _image_folders(tmp_path / "img", n=2, size=(8, 8))
    (tmp_path / "notes.txt").write_text("keep")
    with pytest.raises(InputError, match=match):
        import_image_folders(src, tgt, tmp_path / out)
    assert (tmp_path / "notes.txt").read_text() == "keep"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["img", "notes.txt"]


def test_import_folder_cli_then_train(tmp_path, capsys):
    src, tgt = _image_folders(tmp_path / "img", n=20)
    out = tmp_path / "conv"
    assert main(["data", "import-folder", str(src), str(tgt), "--out", str(out),
                 "--image-size", "16", "--seed", "1", "-q"]) == 0
    assert "records the target suffix, _target" in capsys.readouterr().out
    run = _train(tmp_path, CONFIGS / "shapes_cnn.yaml", out, "data.image_size=null")
    info = json.loads((run / "run.json").read_text())
    assert info["class_names"] == ["cat", "dog", "owl"]
    assert info["target_suffix"] == "_target"  # the suffix the manifest recorded, resolved
    assert main(["data", "import-folder", str(src), str(tgt), "--out", str(out)]) == 2
    assert "not empty" in capsys.readouterr().err


# --------------------------------------------------------------------- data check / show


def test_data_check_prints_the_summary(tiny_data, capsys):
    assert main(["data", "check", str(tiny_data)]) == 0
    out = capsys.readouterr().out
    assert "layout zenodo" in out and "target suffix '_noise'" in out
    assert "classes: 3 (a, b, c)" in out and "16 16 16" in out and "float32" in out
    assert "domain sizes: source 48 train + 24 test, target 48 train + 24 test" in out
    assert out.rstrip().endswith("ok: the folder is valid")


def test_data_check_invalid_exits_2_with_one_line(tiny_data, capsys):
    x = np.load(tiny_data / "test" / "x_test_noise.npy")
    x[5, 0, 0, 0] = np.nan
    np.save(tiny_data / "test" / "x_test_noise.npy", x)
    assert main(["data", "check", str(tiny_data)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("sidda: error: ")
    assert "x_test_noise.npy: image 5 has non-finite" in err[0]


def test_data_check_verify_and_write_manifest(tmp_path, capsys):
    data = _write_mrssc2(tmp_path / "m", _domains(), target_labels=False)
    assert main(["data", "check", str(data), "--write-manifest"]) == 0
    out = capsys.readouterr().out
    assert "layout mrssc2" in out and "unlabelled" in out and "no manifest.json" in out
    man = json.loads((data / "manifest.json").read_text())
    assert len(man["sha256"]) == 6 and man["layout"] == "mrssc2"
    assert main(["data", "check", str(data), "--verify"]) == 0
    assert "checksums: 6 files match" in capsys.readouterr().out
    np.save(data / "source_y_test.npy", np.arange(24) % 3)  # same labels, other bytes
    assert main(["data", "check", str(data), "--verify"]) == 2
    assert "source_y_test.npy: SHA-256 differs" in capsys.readouterr().err


def test_check_data_summary_object(tiny_data):
    s = check_data(DataConfig(path=str(tiny_data), memory_budget_mb=0))
    assert [f.key for f in s.files] == ["train_s", "train_t", "test_s", "test_t"]
    assert all(f.memory_mapped for f in s.files) and s.files[1].min > 0.2  # shifted target
    assert s.model_shape == (1, 16, 16) and s.class_names == ["a", "b", "c"]


@pytest.mark.parametrize("target_labels", [True, False])
def test_data_show_writes_a_png(tmp_path, capsys, target_labels):
    from conftest import write_tiny_data

    data = write_tiny_data(tmp_path / "d", target_labels=target_labels)
    out = tmp_path / "figs" / "grid.png"
    assert main(["data", "show", str(data), "--out", str(out), "--per-class", "4"]) == 0
    with Image.open(out) as im:
        assert im.format == "PNG" and im.size[0] > 600 and im.size[1] > 300


def test_sample_grid_figure(tiny_data):
    fig = sample_grid(load_domains(DataConfig(path=str(tiny_data))), per_class=3,
                      class_names=["a", "b", "c"], scale="image")
    assert len(fig.axes) == 3 * 3 * 2
    assert [ax.get_ylabel() for ax in fig.axes[:9:3]] == ["a", "b", "c"]


@pytest.mark.parametrize("action", ["import-folder", "check", "show"])
def test_data_help(action, capsys):
    with pytest.raises(SystemExit) as e:
        main(["data", action, "--help"])
    assert e.value.code == 0 and f"usage: sidda data {action}" in capsys.readouterr().out


def test_shipped_gz_configs_name_the_suffixes():
    for model in ("cnn", "d4"):
        cfg = yaml.safe_load((CONFIGS / f"gz_evo_{model}.yaml").read_text())
        assert cfg["data"]["source_suffix"] == "_sdss" and cfg["data"]["target_suffix"] == "_desi"
