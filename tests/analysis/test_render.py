"""Markdown and HTML renderers: the same blocks in either syntax, text from a sweep escaped."""

from __future__ import annotations

from types import SimpleNamespace

import pandas as pd

from sslsweep.analysis.confirm import headline_table
from sslsweep.analysis.contents import headline_block
from sslsweep.analysis.render import table_html, table_markdown, to_html, to_markdown
from sslsweep.analysis.sections import Cell, Document, Items, Paragraph, Section, Table


def test_headline_html_and_markdown_escape_names(build: SimpleNamespace) -> None:
    """Names are data: '<b>' in a method name is shown, not interpreted; '|' cannot break a md row."""
    rows = build.budget_rows("a<b>", {(0.1, "linear"): [0.5, 0.6]}, [0, 1])
    page = table_html(headline_block(headline_table(pd.DataFrame(rows))))
    assert "a&lt;b&gt;" in page and "<b>" not in page
    assert table_markdown(Table(["error"], [["x | y\nz"]])).splitlines()[-1] == "| x \\| y z |"


def test_grouped_columns_are_one_header_row_in_markdown_and_two_in_html() -> None:
    """A group label goes before each of its columns' names in Markdown, above them in HTML."""
    table = Table(["method", "linear", "finetune"], [["m", Cell("60.0", "★", best=True, tooltip="n=3"), None]],
                  groups=[("1%", 2)], ident="t")
    assert table_markdown(table).splitlines()[0] == "| method | 1% linear | 1% finetune |"
    assert table_markdown(table).splitlines()[-1] == "| m | **60.0** ★ |  |"
    assert table_html(table) == (
        '<table id="t"><thead><tr><th rowspan="2">method</th><th colspan="2">1%</th></tr>'
        "<tr><th>linear</th><th>finetune</th></tr></thead><tbody><tr><td>m</td>"
        '<td class="best" title="n=3"><strong>60.0</strong> ★</td><td></td></tr></tbody></table>')


def test_one_document_renders_as_markdown_and_as_html() -> None:
    """Title, section headings, paragraphs and list items appear in both, in order."""
    doc = Document("demo", [Section("s1", "Results", [Paragraph("All <good>."), Items([("k", "v|w"), "plain"])])],
                   closing=[Paragraph("The end.")])
    assert to_markdown(doc) == "# demo\n\n## Results\n\nAll <good>.\n\n- **k**: v\\|w\n- plain\n\nThe end.\n"
    assert to_html(doc).endswith(
        '<body><h1>demo</h1><section id="s1"><h2>Results</h2><p>All &lt;good&gt;.</p>'
        "<ul><li><strong>k</strong>: v|w</li><li>plain</li></ul></section><p>The end.</p></body></html>\n")
