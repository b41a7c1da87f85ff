"""build_report end to end on hand-made sweep directories: what report.md and report.html say."""

from __future__ import annotations

import base64
import re
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

from sslsweep.analysis.report import build_report

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


def test_comparisons_show_the_mde_and_mark_a_ci_spanning_zero_as_not_resolved(built_report: SimpleNamespace) -> None:
    """report.md's gain-over-none table gives the MDE (simclr 1% linear: diffs [0.4, 0.4, 0.55], sd 0.0866,
    MDE = 5.3633 * 0.0866 / sqrt(3) = 26.8 points) with the legend; report.html's paired comparisons mark
    rotation vs best at 10% linear (CI spans zero) as not resolved."""
    md, html = built_report.md, built_report.html
    assert "MDE (points)" in md and "| 26.8 |" in md and "minimum detectable difference" in md
    row = re.search(r"<tr><td>10% \(180 labels\)</td><td>linear</td><td>rotation</td><td>best \(simclr\)</td>.*?</tr>",
                    html)
    assert row is not None and "not resolved" in row.group(0)
