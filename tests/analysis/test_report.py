"""build_report end to end on hand-made sweep directories, plus the drawing functions' output."""

from __future__ import annotations

import base64
import re
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from sslsweep.analysis import plots, tables
from sslsweep.analysis.report import build_report, fmt_acc

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
IMG_RE = re.compile(r"<img\b[^>]*>")


def test_report_is_written_beside_the_first_sweep_by_default(built_report: SimpleNamespace) -> None:
    """out=None -> report.md and report.html in the sweep directory; the paths are returned."""
    d = built_report.dir
    assert built_report.paths == {"md": str(Path(d, "report.md")), "html": str(Path(d, "report.html"))}
    assert Path(d, "report.md").is_file() and Path(d, "report.html").is_file()


def test_report_md_holds_headline_numbers_with_best_and_not_worse_marks(built_report: SimpleNamespace) -> None:
    """simclr 1% linear is 60.0 ± 24.8 and best (bold ★); rotation 10% linear 81.7 ± 5.2 is †."""
    md = built_report.md
    assert "| simclr | **60.0 ± 24.8** ★ |" in md
    assert "81.7 ± 5.2 †" in md
    assert ("| none (random init; fine-tune = supervised only) | 15.0 ± 12.4 | 25.0 ± 12.4 | 72.0 ± 4.3 | 76.3 ± 3.8 |"
            in md)  # no marks: worse
    assert "1% (18 labels) linear" in md and "paired Student t-test over seeds" in md


def test_none_is_named_as_the_supervised_only_baseline_in_both_reports(built_report: SimpleNamespace) -> None:
    """The 'none' row says what it is: random features under the linear probe, and under
    fine-tuning the supervised-only baseline every pretext task must beat."""
    for page in (built_report.md, built_report.html):
        assert "none (random init; fine-tune = supervised only)" in page
        assert "fine-tune columns are the supervised-only baseline" in page


def test_report_md_has_best_hparams_search_cost_failures_and_provenance(built_report: SimpleNamespace) -> None:
    """The PR-friendly summary: best trial t1 and its hyperparameters, 22 epochs saved, the OOM
    failure, the commit and the dataset fingerprint."""
    md = built_report.md
    assert "| simclr | t1 | 0.8 | 9 | completed trials | lr=0.1, temperature=0.5, batch_size=128 |" in md
    assert "| simclr | 6 | 1 | 3 | 1 | 1 | 16 | 38 | 22 (58%) |" in md
    assert "simclr: epoch 1: 2, epoch 3: 1" in md
    assert "| simclr | t4 | failed | 0 | CUDA out of memory |" in md
    assert "abc1234" in md and "sha256:aaaa" in md


def test_report_html_is_self_contained(built_report: SimpleNamespace) -> None:
    """No external resource: no http(s) src/href, no <link>, every <img> a data URI of a PNG."""
    page = built_report.html
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:|//)""", page, re.IGNORECASE)
    assert "<link" not in page.lower()
    imgs = IMG_RE.findall(page)
    assert imgs, "the report must embed its plots"
    for img in imgs:
        m = re.search(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', img)
        assert m, f"image is not an embedded PNG: {img[:80]}"
        assert base64.b64decode(m.group(1)).startswith(PNG_MAGIC)
        alt = re.search(r'alt="([^"]*)"', img)
        assert alt and alt.group(1).strip(), "every image needs alt text"


def test_report_html_embeds_each_expected_plot(built_report: SimpleNamespace) -> None:
    """Accuracy vs budget, gain over none, 2 metric-vs-hp (one per method), best-so-far, ASHA = 6."""
    page = built_report.html
    assert page.count('<img src="data:image/png;base64,') == 6
    for alt in ("Test accuracy against label budget", "Gain in test accuracy", "simclr: final knn_top1",
                "rotation: final knn_top1", "Best knn_top1 so far", "ASHA stopped"):
        assert alt in page


def test_report_html_has_headline_table_and_all_sections(built_report: SimpleNamespace) -> None:
    """Table id 'headline' with the best cell bold + ★; sections 1-7 present."""
    page = built_report.html
    assert '<table id="headline">' in page
    assert "<strong>60.0 ± 24.8</strong> ★" in page
    for n in range(1, 8):
        assert f'<section id="s{n}">' in page
    assert "Resolved config" in page and "Resolved search spaces" in page
    assert "CUDA out of memory" in page and "device-hours" in page


def test_report_html_escapes_text_from_the_sweep(built_report: SimpleNamespace) -> None:
    """A config value '<script>alert(...)' must appear escaped, never as markup."""
    page = built_report.html
    assert "&lt;script&gt;alert(" in page
    assert "<script>alert(" not in page


def test_report_writes_to_out_when_given_and_combines_sweeps(make_sweep: Callable[..., str],
                                                            build: SimpleNamespace, tmp_path: Path) -> None:
    """Two sweeps of one dataset (different methods) make one report in `out` with both provenances."""
    a = make_sweep("a", trials=build.search_trials("sw1"),
                   budget=build.confirm_budget("sw1").query("method != 'rotation'"), manifest=build.manifest("sw1"))
    b = make_sweep("b", budget=build.confirm_budget("sw2").query("method == 'rotation'"),
                   manifest=build.manifest("sw2"))
    paths = build_report([a, b], out=str(tmp_path / "out"))
    assert Path(paths["md"]).parent == tmp_path / "out"
    md = Path(paths["md"]).read_text(encoding="utf-8")
    assert "81.7 ± 5.2 †" in md  # rotation came from the second sweep, compared with simclr from the first
    assert "**sweep id**: sw1" in md and "**sweep id**: sw2" in md
    assert not Path(a, "report.md").exists()


def test_report_without_confirm_results_says_so(make_sweep: Callable[..., str], build: SimpleNamespace) -> None:
    """An interrupted sweep (no budget.parquet) still gets a report that states what is missing."""
    paths = build_report([make_sweep("p", trials=build.search_trials(), manifest=build.manifest())])
    md = Path(paths["md"]).read_text(encoding="utf-8")
    assert "No confirm-phase results" in md and "budget.parquet missing" in md
    assert "| simclr | 6 | 1 | 3 | 1 | 1 | 16 | 38 | 22 (58%) |" in md


def test_fmt_acc_shows_na_for_a_single_seed() -> None:
    """n = 1 -> the CI half-width is 'n/a', not 0."""
    assert fmt_acc(0.7, float("nan")) == "70.0 ± n/a"
    assert fmt_acc(0.6, 0.2484) == "60.0 ± 24.8"


# ----------------------------------------------------------------------------- plots


def test_each_plot_returns_a_png(trials: pd.DataFrame, budget: pd.DataFrame) -> None:
    """Every drawing function turns its table into PNG bytes that decode to a non-empty image."""
    from io import BytesIO

    import matplotlib.image as mpimg

    head = tables.headline_table(budget)
    imp = pd.DataFrame({"method": ["m", "m"], "param": ["lr", "wd"], "importance": [0.7, 0.3], "source": "x"})
    pngs = [plots.accuracy_vs_budget(head), plots.gain_over_none(tables.gain_over_none(budget)),
            plots.metric_vs_hparams(tables.metric_vs_hparams(trials, "max"), "simclr"),
            plots.best_so_far(tables.best_so_far(trials, "max")), plots.asha_stops(tables.asha_stops(trials)),
            plots.importances(imp, "m")]
    images = []
    for png in pngs:
        assert png.startswith(PNG_MAGIC)
        image = mpimg.imread(BytesIO(png), format="png")
        assert image.shape[0] > 50 and image.shape[1] > 50
        images.append(image)
    # the per-method lines are drawn, not just the axes and legend: in both budget plots the first
    # method's colour covers ~1,200 pixels with its line, ~100 with its legend entry alone
    first = np.array([int(plots.PALETTE[0][i:i + 2], 16) / 255 for i in (1, 3, 5)])
    for image in images[:2]:
        assert (np.abs(image[..., :3] - first).max(axis=-1) < 0.02).sum() > 300


def test_plots_refuse_an_empty_table() -> None:
    """Nothing to draw is a ValueError saying so, not a blank image."""
    empty = pd.DataFrame(columns=tables.HEADLINE_COLUMNS)
    with pytest.raises(ValueError, match="headline table is empty: there is nothing to draw"):
        plots.accuracy_vs_budget(empty)


def test_headline_html_and_markdown_escape_names(build: SimpleNamespace) -> None:
    """Names are data: '<b>' in a method name is shown, not interpreted; '|' cannot break a md row."""
    from sslsweep.analysis.report import headline_html, md_table

    rows = build.budget_rows("a<b>", {(0.1, "linear"): [0.5, 0.6]}, [0, 1])
    page = headline_html(tables.headline_table(pd.DataFrame(rows)))
    assert "a&lt;b&gt;" in page and "<b>" not in page
    assert md_table(["error"], [["x | y\nz"]]).splitlines()[-1] == "| x \\| y z |"


def test_accuracy_plot_draws_fraction_and_per_class_budgets_side_by_side(build: SimpleNamespace) -> None:
    """Two budget kinds -> two panels: the image is about twice as wide as a single-kind one."""
    from io import BytesIO

    import matplotlib.image as mpimg

    frac = build.budget_rows("simclr", {(0.01, "linear"): [0.5, 0.6], (0.1, "linear"): [0.7, 0.8]}, [0, 1])
    per = build.budget_rows("simclr", {(5, "linear"): [0.5, 0.6], (50, "linear"): [0.7, 0.8]}, [0, 1],
                            kind="per_class")
    one = mpimg.imread(BytesIO(plots.accuracy_vs_budget(tables.headline_table(pd.DataFrame(frac)))), format="png")
    two = mpimg.imread(BytesIO(plots.accuracy_vs_budget(tables.headline_table(pd.DataFrame(frac + per)))),
                       format="png")
    assert two.shape[1] > 1.6 * one.shape[1]
