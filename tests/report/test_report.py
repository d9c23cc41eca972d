import base64
import io
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
from sidda.datasets import to_rgb  # noqa: E402
from sidda.evaluate.diagnostics import label_free_diagnostics  # noqa: E402
from sidda.experiments import train_run  # noqa: E402
from sidda.metrics import DEFAULT_VALIDATOR  # noqa: E402
from sidda.report import build_report  # noqa: E402
from sidda.report.curves import CURVE_FIGURES  # noqa: E402
from sidda.report.gallery import gallery_html  # noqa: E402
from sidda.report.loading import ReportRun  # noqa: E402
from sidda.report.overview import NOT_COMPUTED, overview_html  # noqa: E402
from sidda.runs import RunDir  # noqa: E402

EVIL = "<script>alert('x')</script>"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu",
                  "--disable-background-networking", "--disable-component-update",
                  "--disable-sync", "--no-first-run", "--hide-scrollbars"]
THUMB = "target test image "  # how every gallery image's alt text begins


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    """Three tiny runs and their report via the CLI: a source-only run and a SIDDA run (HTML in
    its name and manifest) on labelled data, and a SIDDA run on data with an unlabelled target
    ("survey"). The two SIDDA runs keep the label-free diagnostics their evaluation wrote; the
    source-only run's are blanked (``null``: an evaluation that could not compute them)."""
    from conftest import write_tiny_data

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("report")
    data = write_tiny_data(root / "data")
    survey = write_tiny_data(root / "survey", seed=1, target_labels=False)
    runs = []
    for name, method, folder in (("base", "source_only", data), ("sidda <b>&", "sidda", data),
                                 ("survey", "sidda", survey)):
        cfg = RunConfig.from_dict({
            "name": name, "out_dir": str(root / "runs"), "data": {"path": str(folder)},
            "model": {"name": "cnn"}, "loss": {"method": method},
            "train": {"epochs": 2, "warmup": 1, "batch_size": 16, "seed": 0, "threads": 1},
        })
        runs.append(train_run(cfg))
    man = runs[1] / "data_manifest.json"
    man.write_text(json.dumps(json.loads(man.read_text()) | {"note": EVIL}))
    assert all(RunDir(r).needs_evaluation() for r in runs)  # `sidda report` evaluates them
    assert main(["report", *map(str, runs), "--out", str(root / "first.html"), "-q"]) == 0
    assert not any(RunDir(r).needs_evaluation() for r in runs)
    assert all(json.loads((r / "metrics.json").read_text())["label_free"] for r in runs)
    m = json.loads((runs[0] / "metrics.json").read_text())
    (runs[0] / "metrics.json").write_text(json.dumps(m | {"label_free": None}))
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


class _Rows(HTMLParser):
    """The body rows of the tables in some HTML: [(cell text, cell class)] per row."""

    def __init__(self):
        super().__init__()
        self.rows, self._cell, self._in_body = [], None, False

    def handle_starttag(self, tag, attrs):
        if tag == "tbody":
            self._in_body = True
        elif tag == "tr" and self._in_body:
            self.rows.append([])
        elif tag == "td" and self._in_body:
            self._cell = ["", dict(attrs).get("class", "")]

    def handle_endtag(self, tag):
        if tag == "td" and self._cell is not None:
            self.rows[-1].append((self._cell[0].strip(), self._cell[1]))
            self._cell = None
        elif tag == "tbody":
            self._in_body = False

    def handle_data(self, data):
        if self._cell is not None:
            self._cell[0] += data


def _section(text, start, end):
    return text[text.index(start):text.index(end)]


def _figures(tags):
    """The figure images (not the gallery thumbnails) of a page."""
    return [a for t, a in tags if t == "img" and not a.get("alt", "").startswith(THUMB)]


def test_report_is_self_contained_with_every_figure(page):
    out, runs = page
    text = out.read_text()
    tags, words = _parse(text)
    imgs = _figures(tags)
    curves = [a for a in imgs if a["alt"].startswith("training curves: ")]
    # Isomap (all runs) + training curves (all runs, one figure per quantity) + per run:
    # reliability (the source is labelled in each) and confusion matrices.
    assert [a["alt"].removeprefix("training curves: ") for a in curves] == list(CURVE_FIGURES)
    assert len(imgs) == 1 + len(curves) + 2 * len(runs)
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
    for section in ("What happened on the target", "Summary", "Calibration",
                    "Paper-compatible", "Label-free checkpoint", "Latent space",
                    "Reliability diagrams", "Confusion matrices", "Training curves",
                    "Target test images by predicted class", "Config", "Data manifest",
                    "Classification report"):
        assert section in words, section
    for metric in ("target ECE (T)", "Brier (T)", "NLL (T)", "probe ECE (paper)",
                   "probe Brier/K (paper)", "entropy", "iwv", "dev", "oracle (target labels)",
                   "val NLL after"):
        assert metric in words, metric
    assert "tiny-blobs" in words and "batch_size: 16" in words  # manifest and config


def test_training_curves_of_all_runs_share_their_figures(page):
    """One figure per quantity with a line per run, none per run."""
    out, runs = page
    tags, _ = _parse(out.read_text())
    curves = [a for a in _figures(tags) if a["alt"].startswith("training curves")]
    assert len(curves) == len(CURVE_FIGURES)
    assert {a["data-curves"] for a in curves} == {str(len(runs))}  # three runs, no seed group


def test_paths_are_relative_to_the_report(page):
    """The page is mailed: no absolute path of this machine is on it."""
    out, runs = page
    text = out.read_text()
    root = out.parent
    assert str(root) not in text and str(root.resolve()) not in text
    assert "pytest-of" not in text
    words = _parse(text)[1]
    assert "Directory: runs/base" in words and "Directory: runs/survey" in words
    assert "path: data" in words and "out_dir: runs" in words  # the config, rewritten
    # a report in a sub-folder climbs out of it
    nested = root / "mail" / "r.html"
    assert main(["report", str(runs[0]), "--out", str(nested), "-q",
                 "--isomap-points", "10"]) == 0
    assert "Directory: ../runs/base" in _parse(nested.read_text())[1]
    assert str(root) not in nested.read_text()


def test_report_numbers_are_the_metrics(page):
    out, runs = page
    words = _parse(out.read_text())[1]
    for r in runs[:2]:  # the runs with target labels
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


# ----------------------------------------------------------------------------- first screen


def _overview_rows(text):
    p = _Rows()
    p.feed(_section(text, "<h2 id='overview'>", "<h2 id='summary'>"))
    return {row[0][0]: row for row in p.rows}


def _pct(v):
    return f"{round(100 * v)}%"


def _check_row(row, lf):
    """One overview row against the label-free dict it was rendered from."""
    cells = [c for c, _ in row]
    k = len(lf["class_fractions"])
    assert cells[1] == str(lf["n"]["target"])
    for cell, (name, f) in zip(row[2:2 + k], lf["class_fractions"].items(), strict=True):
        assert cell[0] == f"{_pct(f['target_predicted'])} ({_pct(f['source_labels'])})", name
        flagged = name in lf["collapse"]["over_predicted"] + lf["collapse"]["missing"]
        assert (cell[1] == "hi") == flagged
    collapse = row[2 + k]
    assert collapse == (("RAISED", "alarm") if lf["collapse"]["flag"] else ("no", ""))
    conf, ent = lf["mean_confidence"], lf["mean_entropy"]
    assert cells[3 + k] == f"{conf['target']:.4f} ({conf['source']:.4f})"
    assert cells[4 + k] == f"{ent['target']:.4f} ({ent['source']:.4f})"
    dist = lf["domain_distance"]
    assert cells[5 + k:9 + k] == [f"{dist[key]:.4f}" for key in
                                  ("sinkhorn_fixed_blur", "mmd2", "domain_accuracy", "pad")]
    order = [DEFAULT_VALIDATOR] + [v for v in lf["validators"] if v != DEFAULT_VALIDATOR]
    assert cells[9 + k:] == ["\u2013" if lf["validators"][v] is None
                             else f"{lf['validators'][v]:.4f}" for v in order]


def test_first_screen_says_what_happened_on_an_unlabelled_target(page):
    """The survey run has no target label: the first section still shows its class shares,
    collapse flag, domain distance and validator scores, as label_free_diagnostics gave them."""
    out, runs = page
    text = out.read_text()
    assert text.index("<h2") == text.index("<h2 id='overview'>")  # the first section
    survey = json.loads((runs[2] / "metrics.json").read_text())
    assert survey["target"].get("accuracy") is None and "labels_target.npy" not in {
        p.name for p in runs[2].iterdir()}
    lf = survey["label_free"]
    assert set(lf["validators"]) >= {"im", "snd", "entropy"}
    assert lf["domain_distance"]["sinkhorn_fixed_blur"] is not None
    _check_row(_overview_rows(text)["survey"], lf)
    head = _section(text, "<h2 id='overview'>", "</thead>")
    assert f"{DEFAULT_VALIDATOR} \u2605 default" in head  # the default validator, marked


def test_first_screen_of_labelled_and_older_evaluations(page):
    out, runs = page
    text = out.read_text()
    rows = _overview_rows(text)
    lf = json.loads((runs[1] / "metrics.json").read_text())["label_free"]
    _check_row(rows["sidda <b>&"], lf)
    assert rows["base"][1][0] == f"label-free diagnostics {NOT_COMPUTED}"
    banners = _section(text, "<h2 id='overview'>", "<table>")
    for r in runs[1:]:  # a raised flag is loud: a banner with every reason
        c = json.loads((r / "metrics.json").read_text())["label_free"]["collapse"]
        assert (f"Collapse flag raised for {r.name}" in banners.replace("&lt;b&gt;&amp;",
                                                                         "<b>&")) == c["flag"]
        for reason in c["reasons"]:
            assert reason.replace("'", "&#x27;") in banners


def test_a_collapse_is_loud_and_a_balanced_target_is_not(page):
    """overview_html of label_free_diagnostics on target logits that all pick one class."""
    _, runs = page
    run = ReportRun.read(RunDir(runs[2]), "survey")
    rng = np.random.default_rng(0)
    z_s, z_t = rng.normal(size=(30, 8)), rng.normal(size=(30, 8))
    logits_s = rng.normal(size=(30, 3))
    common = dict(latents_t=z_t, latents_s=z_s, logits_s=logits_s,
                  labels_s=np.arange(30) % 3, source_class_counts=[10, 10, 10],
                  class_names=["star", "E0", "spiral"], validators=["im"])
    one_class = np.tile([8.0, 0.0, 0.0], (30, 1)) + rng.normal(0, 0.1, (30, 3))
    collapsed = label_free_diagnostics(logits_t=one_class, **common)
    balanced = label_free_diagnostics(logits_t=np.eye(3)[np.arange(30) % 3] * 8, **common)
    assert collapsed["collapse"]["flag"] and not balanced["collapse"]["flag"]

    html_c = overview_html([run._replace(metrics={"label_free": collapsed})])
    assert "<div class='alarm'>Collapse flag raised for survey" in html_c
    assert "class &#x27;star&#x27; takes 100% of the target predictions" in html_c
    assert _overview_rows(html_c + "<h2 id='summary'>")["survey"][5] == ("RAISED", "alarm")
    html_b = overview_html([run._replace(metrics={"label_free": balanced})])
    assert "class='alarm'" not in html_b
    assert _overview_rows(html_b + "<h2 id='summary'>")["survey"][5] == ("no", "")


# ----------------------------------------------------------------------------- galleries


def _expected_picks(probs, per_side=6):
    """The gallery's choice by a literal loop: per class, the most confident (ties: earlier
    image first), then the least confident of the rest."""
    out = []
    for k in range(probs.shape[1]):
        mine = [(float(probs[i].max()), i) for i in range(len(probs))
                if int(np.argmax(probs[i])) == k]
        most = [i for _, i in sorted(mine, key=lambda t: (-t[0], t[1]))[:per_side]]
        rest = [(c, i) for c, i in mine if i not in most]
        least = [i for _, i in sorted(rest)[:per_side]]
        out.append((most, least))
    return out


def _thumbs(section):
    """(image index, decoded RGB pixels) of each gallery image in a run's section, in order."""
    from PIL import Image

    out = []
    for t, a in _parse(section)[0]:
        if t == "img" and a.get("alt", "").startswith(THUMB):
            i = int(a["alt"].removeprefix(THUMB).split(",")[0])
            png = base64.b64decode(a["src"].split(",", 1)[1])
            out.append((i, np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))))
    return out


def test_galleries_show_the_most_and_least_confident_target_images(page):
    """Each run's gallery: the images of probs_target.npy's rows, from the data file in file
    order, drawn as to_rgb draws the same images (one band: grey)."""
    out, runs = page
    text = out.read_text()
    sections = text.split("<h2 id='run-")[1:]
    assert len(sections) == len(runs)
    for run, section in zip(runs, sections, strict=True):
        probs = np.load(run / "probs_target.npy")
        picks = _expected_picks(probs)
        shown = [i for most, least in picks for i in most + least]
        thumbs = _thumbs(section)
        assert [i for i, _ in thumbs] == shown
        folder = "survey" if run.name == "survey" else "data"
        x = np.load(out.parent / folder / "test" / "x_test_noise.npy")  # (N, H, W, 1)
        expected = to_rgb(np.moveaxis(x[shown], -1, 1))  # (n, H, W, 3)
        for (i, got), want in zip(thumbs, expected, strict=True):
            assert got.shape == want.shape and np.array_equal(got, want), i
        for most, least in picks:  # the confidence printed under each
            for i in most + least:
                assert f"confidence {probs[i].max():.3f}" in section
    assert len(text.encode()) < 3_000_000  # small thumbnails keep the page small


def test_gallery_stretch_and_bands_are_the_users(page):
    _, runs = page
    run = ReportRun.read(RunDir(runs[2]), "survey")
    html = gallery_html(run, base=runs[2].parent, rgb=(0,), stretch="asinh")
    shown = [i for most, least in _expected_picks(run.array("probs", "target"))
             for i in most + least]
    x = np.load(runs[2].parent.parent / "survey" / "test" / "x_test_noise.npy")
    want = to_rgb(np.moveaxis(x[shown], -1, 1), rgb=(0,), stretch="asinh")
    got = [im for _, im in _thumbs(html)]
    assert np.array_equal(np.stack(got), want) and "asinh stretch" in html


def test_gallery_without_its_data_says_why(page, tmp_path):
    from conftest import write_tiny_data

    _, runs = page
    run = ReportRun.read(RunDir(runs[2]), "survey")
    gone = run._replace(metrics=run.metrics | {"data_path": str(tmp_path / "moved")})
    html = gallery_html(gone, base=tmp_path)
    assert "Not drawn" in html and "moved" in html and str(tmp_path) not in html
    other = write_tiny_data(tmp_path / "smaller", n_test=12, target_labels=False)
    html = gallery_html(run._replace(metrics=run.metrics | {"data_path": str(other)}),
                        base=tmp_path)
    assert "holds 12 target test images but the evaluation has 24" in html
    assert THUMB not in html and str(tmp_path) not in html


def test_report_colour_options_are_checked(page, tmp_path, capsys):
    _, runs = page
    out = tmp_path / "r.html"
    for options, message in ((["--rgb", "0,1"], "--rgb takes 3 bands (for R, G, B) or 1"),
                             (["--stretch", "log"], "--stretch must be one of"),
                             (["--rgb", "2,1,0"], "run base: --rgb names band 2, but the images "
                                                  "have 1 band(s) (0..0)")):
        assert main(["report", str(runs[0]), "--out", str(out), *options]) == 2
        assert message in capsys.readouterr().err
        assert not out.exists()


def test_report_needs_metrics_and_runs(tmp_path, capsys):
    with pytest.raises(FileNotFoundError, match="sidda evaluate"):
        build_report([tmp_path])
    with pytest.raises(ValueError, match="at least one"):
        build_report([])
    assert main(["report", str(tmp_path), "--out", str(tmp_path / "r.html")]) == 2
    assert "not a run directory" in capsys.readouterr().err
    assert not (tmp_path / "r.html").exists()


@pytest.mark.parametrize("names", [["a", "b"], [f"c{i}" for i in range(50)], "a,b,c",
                                   [{"a": 1}, "b", "c"], ["a", "a", "b"]])
def test_a_run_with_wrong_class_names_is_drawn_by_class_number(page, tmp_path, names):
    """An older run could keep class names that do not fit its classes in data_manifest.json
    (run.json dropped them): the report draws the classes by number instead of failing."""
    _, runs = page
    run = tmp_path / "runs" / "old"
    shutil.copytree(runs[0], run)
    for name, key, value in (("data_manifest.json", "class_names", names),
                             ("run.json", "class_names", None)):
        d = json.loads((run / name).read_text())
        (run / name).write_text(json.dumps(d | {key: value}))
    assert ReportRun.read(RunDir(run), "old").class_names is None
    assert main(["report", str(run), "--out", str(tmp_path / "r.html"), "-q"]) == 0
    assert "<h2 id='overview'>" in (tmp_path / "r.html").read_text()
    good = json.loads((run / "data_manifest.json").read_text()) | {"class_names": ["x", "y", "z"]}
    (run / "data_manifest.json").write_text(json.dumps(good))
    assert ReportRun.read(RunDir(run), "old").class_names == ["x", "y", "z"]


def _chromium():
    return shutil.which("chromium") or shutil.which("chromium-browser")


def test_report_renders_in_headless_chromium(page, tmp_path):
    """Every figure and gallery image decodes in a real browser, the label-free block is on
    the first screen, and the page is not blank."""
    exe = _chromium()
    if exe is None:
        pytest.skip("chromium is not installed (Debian: apt-get install -y chromium)")
    out, runs = page
    # The page plus a probe that writes, after the load event, each image's decoded size, and
    # where the label-free block is with the text of its table.
    probe = ("<script>window.addEventListener('load', () => {const p = "
             "document.createElement('pre'); p.id = 'img-check'; const o = "
             "document.getElementById('overview'); p.textContent = JSON.stringify({"
             "imgs: [...document.images].map(i => [i.alt.startsWith('target test image'), "
             "i.complete, i.naturalWidth, i.naturalHeight, i.width]), "
             "overview_top: o.getBoundingClientRect().top, "
             "overview: o.parentElement.querySelector('.wide table').innerText}); "
             "document.body.appendChild(p);});</script>")
    probed = tmp_path / "probed.html"
    probed.write_text(out.read_text().replace("</body>", probe + "</body>"))

    def chromium(*args, profile):
        return subprocess.run(
            [exe, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / profile}", *args],
            capture_output=True, text=True, timeout=120,
        )

    res = chromium("--virtual-time-budget=10000", "--window-size=1280,1000", "--dump-dom",
                   probed.as_uri(), profile="p1")
    found = re.search(r'<pre id="img-check">([^<]*)</pre>', res.stdout)
    assert found, f"no image report in the DOM; stderr: {res.stderr[-2000:]}"
    import html as _html

    seen = json.loads(_html.unescape(found.group(1)))
    figures = [i for i in seen["imgs"] if not i[0]]
    thumbs = [i for i in seen["imgs"] if i[0]]
    tags = _parse(out.read_text())[0]
    assert len(figures) == len(_figures(tags))
    for _, complete, w, h, _ in figures:
        assert complete and w > 100 and h > 100
    expected = sum(len(most) + len(least) for r in runs
                   for most, least in _expected_picks(np.load(r / "probs_target.npy")))
    assert len(thumbs) == expected > 0
    for _, complete, w, h, shown in thumbs:
        assert complete and w == h == 16 and shown == 64  # 16-pixel images drawn 64 wide
    assert 0 <= seen["overview_top"] < 300  # the first block under the title
    rows = {line.split("\t")[0]: line.split("\t")[1:] for line in seen["overview"].splitlines()}
    assert NOT_COMPUTED in rows["base"][0]
    for name in ("survey", "sidda <b>&"):  # target images, class shares, collapse, ...
        assert rows[name][0] == "24" and rows[name][1].endswith("%)")
        assert rows[name][4] in ("RAISED", "no")

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
