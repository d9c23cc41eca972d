import base64
import json
import re
import shutil
import subprocess
from html.parser import HTMLParser

import numpy as np
import pytest
import torch

pytest.importorskip("matplotlib")

from sidda import RunConfig  # noqa: E402
from sidda.cli import main  # noqa: E402
from sidda.experiments import needs_evaluation, train_run  # noqa: E402
from sidda.report import build_report  # noqa: E402

EVIL = "<script>alert('x')</script>"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu",
                  "--disable-background-networking", "--disable-component-update",
                  "--disable-sync", "--no-first-run", "--hide-scrollbars"]


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    """Two tiny runs (one with HTML in its name and manifest) and their report via the CLI."""
    from conftest import write_tiny_data

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("report")
    data = write_tiny_data(root / "data")
    runs = []
    for name, method in (("base", "source_only"), ("sidda <b>&", "sidda")):
        cfg = RunConfig.from_dict({
            "name": name, "out_dir": str(root / "runs"), "data": {"path": str(data)},
            "model": {"name": "cnn"}, "loss": {"method": method},
            "train": {"epochs": 2, "warmup": 1, "batch_size": 16, "seed": 0, "threads": 1},
        })
        runs.append(train_run(cfg))
    man = runs[1] / "data_manifest.json"
    man.write_text(json.dumps(json.loads(man.read_text()) | {"note": EVIL}))
    assert all(needs_evaluation(r) for r in runs)  # never evaluated: `sidda report` does it
    out = root / "report.html"
    assert main(["report", *map(str, runs), "--out", str(out), "-q"]) == 0
    torch.set_num_threads(n)
    return out, runs


class _Tags(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags, self.text = [], []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data):
        self.text.append(data)


def _parse(text):
    p = _Tags()
    p.feed(text)
    return p.tags, " ".join(p.text)


def test_report_is_self_contained_with_every_figure(page):
    out, runs = page
    text = out.read_text()
    tags, words = _parse(text)
    imgs = [a for t, a in tags if t == "img"]
    # Isomap (all runs) + per run: reliability, confusion matrices, training curves.
    assert len(imgs) == 1 + 3 * len(runs)
    for a in imgs:
        assert a["src"].startswith("data:image/png;base64,") and a.get("alt")
        png = base64.b64decode(a["src"].split(",", 1)[1])
        assert png[:8] == b"\x89PNG\r\n\x1a\n"
        width, height = np.frombuffer(png[16:24], dtype=">u4")
        assert width > 100 and height > 100
    assert not [t for t, a in tags if t in ("link", "iframe") or (t == "script")]
    assert not re.search(r"""(src|href)=["']?(https?:|//|file:)""", text)
    alts = " ".join(a["alt"] for a in imgs)
    for fig in ("Isomap", "reliability", "confusion", "training curves"):
        assert fig in alts
    for section in ("Summary", "Calibration", "Paper-compatible", "Label-free checkpoint",
                    "Latent space", "Reliability diagrams", "Confusion matrices",
                    "Training curves", "Config", "Data manifest", "Classification report"):
        assert section in words, section
    for metric in ("target ECE (T)", "Brier (T)", "NLL (T)", "probe ECE (paper)",
                   "probe Brier/K (paper)", "entropy", "iwv", "dev", "oracle (target labels)",
                   "val NLL after"):
        assert metric in words, metric
    assert "tiny-blobs" in words and "batch_size: 16" in words  # manifest and config


def test_report_numbers_are_the_metrics(page):
    out, runs = page
    words = _parse(out.read_text())[1]
    for r in runs:
        m = json.loads((r / "metrics.json").read_text())
        for v in (m["target"]["accuracy"], m["target"]["ece"],
                  m["target"]["temperature_scaled"]["ece"], m["temperature"]["value"],
                  m["target"]["paper_compatible"]["probe_brier"]):
            assert f"{v:.4f}" in words


def test_report_escapes_text(page):
    out, _ = page
    text = out.read_text()
    assert EVIL not in text and "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in text
    assert "sidda <b>&" not in text and "sidda &lt;b&gt;&amp;" in text


def test_report_needs_metrics_and_runs(tmp_path, capsys):
    with pytest.raises(FileNotFoundError, match="sidda evaluate"):
        build_report([tmp_path])
    with pytest.raises(ValueError, match="at least one"):
        build_report([])
    assert main(["report", str(tmp_path), "--out", str(tmp_path / "r.html")]) == 2
    assert "not a run directory" in capsys.readouterr().err
    assert not (tmp_path / "r.html").exists()


def _chromium():
    return shutil.which("chromium") or shutil.which("chromium-browser")


def test_report_renders_in_headless_chromium(page, tmp_path):
    """Every image decodes in a real browser, and the page is not blank."""
    exe = _chromium()
    if exe is None:
        pytest.skip("chromium is not installed (Debian: apt-get install -y chromium)")
    out, runs = page
    # The page plus a probe that writes, after the load event, each image's decoded size.
    probe = ("<script>window.addEventListener('load', () => {const p = "
             "document.createElement('pre'); p.id = 'img-check'; p.textContent = "
             "[...document.images].map(i => i.complete + ':' + i.naturalWidth + 'x' + "
             "i.naturalHeight).join(' '); document.body.appendChild(p);});</script>")
    probed = tmp_path / "probed.html"
    probed.write_text(out.read_text().replace("</body>", probe + "</body>"))

    def chromium(*args, profile):
        return subprocess.run(
            [exe, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / profile}", *args],
            capture_output=True, text=True, timeout=120,
        )

    res = chromium("--virtual-time-budget=10000", "--dump-dom", probed.as_uri(),
                   profile="p1")
    found = re.search(r'<pre id="img-check">([^<]*)</pre>', res.stdout)
    assert found, f"no image report in the DOM; stderr: {res.stderr[-2000:]}"
    sizes = found.group(1).split()
    assert len(sizes) == 1 + 3 * len(runs)
    for s in sizes:
        complete, dims = s.split(":")
        w, h = map(int, dims.split("x"))
        assert complete == "true" and w > 100 and h > 100, s

    shot = tmp_path / "shot.png"
    res = chromium("--window-size=1280,2400", f"--screenshot={shot}", out.as_uri(),
                   profile="p2")
    assert shot.is_file(), res.stderr[-2000:]
    import matplotlib.image

    img = matplotlib.image.imread(shot)[..., :3]
    assert img.shape[:2] == (2400, 1280)
    ink = (img.mean(axis=2) < 0.9).mean()  # fraction of non-white pixels
    assert 0.02 < ink < 0.9 and img.std() > 0.05


def test_report_renders_only(tmp_path, tiny_data):
    """write_report never evaluates: a trained, unevaluated run is an error and stays as it is."""
    import sys

    from sidda.report import write_report

    run = train_run(RunConfig.from_dict({
        "name": "r", "out_dir": str(tmp_path / "runs"), "data": {"path": str(tiny_data)},
        "model": {"name": "cnn"},
        "train": {"epochs": 1, "warmup": 0, "batch_size": 16, "seed": 0, "threads": 1},
    }))
    with pytest.raises(FileNotFoundError, match="no metrics.json"):
        write_report([run], tmp_path / "r.html")
    assert not (run / "metrics.json").exists() and not (tmp_path / "r.html").exists()
    code = "import sys, sidda.report; print('sidda.experiments' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True)
    assert done.stdout.strip() == "False"
