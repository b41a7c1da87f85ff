"""Write a :class:`~sslsweep.analysis.sections.Document` as Markdown or as self-contained HTML.

Formatting only: the blocks already hold every word and number. Text from a sweep (method names,
errors, config values) is escaped in both formats: in HTML every text is escaped; in Markdown table
cells and list items are, so that a ``|`` or a newline cannot break a row.

The HTML page needs nothing outside it: inline CSS, images as ``data:`` URIs, and one inline
script that records on ``<body>`` how many images decoded (a browser test reads it).
"""

from __future__ import annotations

import base64
import html

from sslsweep.analysis.sections import (
    Block,
    Cell,
    Details,
    Document,
    Figure,
    Heading,
    Items,
    Paragraph,
    Preformatted,
    Section,
    Table,
)

# ----------------------------------------------------------------------------- markdown


def _md_escape(text: object) -> str:
    return str(text).replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ").replace("\r", " ")


def _md_cell(cell: str | Cell | None) -> str:
    if cell is None:
        return ""
    if not isinstance(cell, Cell):
        return _md_escape(cell)
    text = f"**{_md_escape(cell.text)}**" if cell.best else _md_escape(cell.text)
    return f"{text} {_md_escape(cell.mark)}".rstrip()


def table_markdown(table: Table) -> str:
    """A GitHub-flavoured Markdown table; a grouped column is headed ``"<group> <name>"``."""
    header = list(table.header)
    start = len(header) - sum(span for _, span in table.groups)
    for label, span in table.groups:
        header[start:start + span] = [f"{label} {name}" for name in header[start:start + span]]
        start += span
    lines = ["| " + " | ".join(_md_escape(h) for h in header) + " |",
             "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in table.rows]
    return "\n".join(lines)


def _md_item(item: str | tuple[str, str]) -> str:
    if isinstance(item, tuple):
        return f"- **{item[0]}**: {_md_escape(item[1])}"
    return f"- {_md_escape(item)}"


def _md_block(block: Block) -> str:
    if isinstance(block, Paragraph):
        return block.text
    if isinstance(block, Table):
        return table_markdown(block)
    if isinstance(block, Items):
        return "\n".join(_md_item(i) for i in block.items)
    if isinstance(block, Heading):
        return f"{'#' * block.level} {block.text}"
    if isinstance(block, Preformatted):
        return f"```\n{block.text}\n```"
    if isinstance(block, Figure):
        return f"![{block.alt}](data:image/png;base64,{base64.b64encode(block.png).decode('ascii')})"
    if isinstance(block, Details):
        return "\n\n".join([f"**{block.summary}**", *(_md_block(b) for b in block.blocks)])
    raise TypeError(f"block is a {type(block).__name__}: it must be one of sections.Block")


def to_markdown(doc: Document) -> str:
    """The document as Markdown: ``#`` title, ``##`` sections, blocks separated by blank lines."""
    parts = [f"# {doc.title}", ""]
    for section in doc.sections:
        parts += [f"## {section.title}", ""]
        for block in section.blocks:
            parts += [_md_block(block), ""]
    for block in doc.closing:
        parts += [_md_block(block), ""]
    return "\n".join(parts)


# ----------------------------------------------------------------------------- html

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1200px;margin:2em auto;
padding:0 1em;color:#222;line-height:1.4}
table{border-collapse:collapse;margin:0.8em 0;font-size:0.9em}
th,td{border:1px solid #ccc;padding:4px 8px;text-align:right;vertical-align:top}
th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}
td.best{background:#e8f5e9}td.text{text-align:left;white-space:pre-wrap;font-family:monospace}
img{max-width:100%;height:auto;display:block;margin:0.8em 0}
pre{background:#f7f7f7;padding:0.8em;overflow:auto;font-size:0.85em}
.note{color:#555;font-size:0.9em}h2{border-bottom:1px solid #ddd;padding-bottom:0.2em}
"""

IMAGE_CHECK = """
window.addEventListener('load', function () {
  var imgs = document.images, ok = 0;
  for (var i = 0; i < imgs.length; i++) { if (imgs[i].complete && imgs[i].naturalWidth > 0) { ok++; } }
  document.body.dataset.imagesLoaded = String(ok);
  document.body.dataset.imagesTotal = String(imgs.length);
});
"""


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def _td(cell: str | Cell | None, text_col: bool) -> str:
    if cell is None:
        return "<td></td>"
    if not isinstance(cell, Cell):
        return f'<td class="text">{_e(cell)}</td>' if text_col else f"<td>{_e(cell)}</td>"
    title = f' title="{_e(cell.tooltip)}"' if cell.tooltip else ""
    if cell.best:
        return f'<td class="best"{title}><strong>{_e(cell.text)}</strong> {_e(cell.mark)}</td>'
    return f"<td{title}>{_e(cell.text)} {_e(cell.mark)}</td>"


def table_html(table: Table) -> str:
    """An HTML table, every cell escaped; column groups as a header row above their columns."""
    ident = f' id="{_e(table.ident)}"' if table.ident else ""
    if table.groups:
        lead = len(table.header) - sum(span for _, span in table.groups)
        top = "".join(f'<th rowspan="2">{_e(h)}</th>' for h in table.header[:lead])
        top += "".join(f'<th colspan="{span}">{_e(label)}</th>' for label, span in table.groups)
        sub = "".join(f"<th>{_e(h)}</th>" for h in table.header[lead:])
        head = f"<tr>{top}</tr><tr>{sub}</tr>"
    else:
        head = "<tr>" + "".join(f"<th>{_e(h)}</th>" for h in table.header) + "</tr>"
    body = "".join("<tr>" + "".join(_td(c, i in table.text_cols) for i, c in enumerate(row)) + "</tr>"
                   for row in table.rows)
    return f"<table{ident}><thead>{head}</thead><tbody>{body}</tbody></table>"


def _html_item(item: str | tuple[str, str]) -> str:
    if isinstance(item, tuple):
        return f"<li><strong>{_e(item[0])}</strong>: {_e(item[1])}</li>"
    return f"<li>{_e(item)}</li>"


def _html_block(block: Block) -> str:
    if isinstance(block, Paragraph):
        return f'<p class="note">{_e(block.text)}</p>' if block.note else f"<p>{_e(block.text)}</p>"
    if isinstance(block, Table):
        return table_html(block)
    if isinstance(block, Figure):
        data = base64.b64encode(block.png).decode("ascii")
        return f'<img src="data:image/png;base64,{data}" alt="{_e(block.alt)}" title="{_e(block.title)}">'
    if isinstance(block, Items):
        return "<ul>" + "".join(_html_item(i) for i in block.items) + "</ul>"
    if isinstance(block, Heading):
        return f"<h{block.level}>{_e(block.text)}</h{block.level}>"
    if isinstance(block, Preformatted):
        return f"<pre>{_e(block.text)}</pre>"
    if isinstance(block, Details):
        return (f"<details><summary>{_e(block.summary)}</summary>"
                + "".join(_html_block(b) for b in block.blocks) + "</details>")
    raise TypeError(f"block is a {type(block).__name__}: it must be one of sections.Block")


def _html_section(section: Section) -> str:
    body = "".join(_html_block(b) for b in section.blocks)
    return f'<section id="{_e(section.id)}"><h2>{_e(section.title)}</h2>{body}</section>'


def to_html(doc: Document) -> str:
    """The document as one self-contained HTML page (inline CSS, images as data URIs)."""
    body = "".join(_html_section(s) for s in doc.sections) + "".join(_html_block(b) for b in doc.closing)
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{_e(doc.title)}</title><style>{CSS}</style><script>{IMAGE_CHECK}</script></head>"
            f"<body><h1>{_e(doc.title)}</h1>{body}</body></html>\n")
