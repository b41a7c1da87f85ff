"""The report as data: a :class:`Document` of titled :class:`Section` s, each a list of blocks
(paragraphs, tables, figures, lists, ...). Blocks say what is shown, never how:
:mod:`sslsweep.analysis.render` writes any document as Markdown or as HTML, and
:mod:`sslsweep.analysis.contents` builds the report's documents.

Example::

    doc = Document("demo", [Section("s1", "Results", [Paragraph("All good."), Table(["a"], [["1"]])])])
    render.to_markdown(doc)   # "# demo", "## Results", "All good.", then the table
    render.to_html(doc)       # the same as one self-contained page
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Paragraph:
    """Text; a ``note`` is secondary (smaller, greyed in HTML)."""

    text: str
    note: bool = False


@dataclass(frozen=True)
class Cell:
    """A table cell: ``text`` then ``mark``; a ``best`` cell is emphasised; ``tooltip`` shows on hover
    where the format has hovering (HTML)."""

    text: str
    mark: str = ""
    best: bool = False
    tooltip: str = ""


@dataclass(frozen=True)
class Table:
    """Rows of cells under a header.

    Args:
        header: one name per column.
        rows: one sequence per row, as long as ``header``; a cell is text, a :class:`Cell`, or None (empty).
        groups: ``(label, span)`` pairs over the last ``sum(spans)`` columns: a header row above theirs
            (HTML), or the label put before each column's name (Markdown).
        ident: an id for the table (HTML).
        text_cols: indices of columns holding free text such as error messages (HTML: monospace, wrapped).
    """

    header: Sequence[str]
    rows: Sequence[Sequence[str | Cell | None]]
    groups: Sequence[tuple[str, int]] = ()
    ident: str | None = None
    text_cols: Sequence[int] = ()


@dataclass(frozen=True)
class Figure:
    """A PNG image with its title and alt text."""

    title: str
    alt: str
    png: bytes


@dataclass(frozen=True)
class Preformatted:
    """Text shown as is, in a fixed-width font (a JSON dump, say)."""

    text: str


@dataclass(frozen=True)
class Items:
    """A bulleted list; an item given as ``(label, text)`` shows its label in bold."""

    items: Sequence[str | tuple[str, str]]


@dataclass(frozen=True)
class Heading:
    """A heading inside a section (``level`` 3 or 4: sections themselves are level 2)."""

    text: str
    level: int = 3


@dataclass(frozen=True)
class Details:
    """Blocks shown folded under a one-line ``summary`` where the format can fold (HTML)."""

    summary: str
    blocks: Sequence[Block]


Block = Paragraph | Table | Figure | Preformatted | Items | Heading | Details


@dataclass(frozen=True)
class Section:
    """A titled part of the document; ``id`` names it for links (HTML)."""

    id: str
    title: str
    blocks: Sequence[Block]


@dataclass(frozen=True)
class Document:
    """A title, the sections in order, and blocks that close the document after them."""

    title: str
    sections: Sequence[Section]
    closing: Sequence[Block] = ()
