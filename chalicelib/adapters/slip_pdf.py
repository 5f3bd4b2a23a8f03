"""The paper slip as a PDF (contract v2 §7): one A6 page, its link as a QR code and as selectable text.

fpdf2 writes the PDF, segno encodes the QR code; both are imported here only, and this module only by the slip
path (``bootstrap.slip_service``): no other request imports them (``bench/slip.py`` and a unit test check it).

For a screen reader the slip is real text in reading order (never a picture of text), in the core font Helvetica
with the Windows-1252 encoding (French accents, ``€``, ``œ``; no font to embed, so the file stays a few KB), with the
document's language (``fr-FR``) and title set and shown as the window title. The QR code is drawn as vector
rectangles, one per run of dark modules. The PDF is not tagged: fpdf2 tags images with alternative text only, and a
partly tagged PDF makes some screen readers skip its untagged text.
"""

from __future__ import annotations

import segno
from fpdf import FPDF, ViewerPreferences
from fpdf.enums import Align, WrapMode, XPos, YPos

from chalicelib.domain.messages import SlipText, fold_to

#: A6 portrait, in millimetres.
PAGE_WIDTH, PAGE_HEIGHT = 105.0, 148.0
MARGIN = 8.0
QR_SIDE = 42.0  # the QR code's side with its quiet zone (4 modules): about 1 mm a module for a version 5 code
ENCODING = "windows-1252"
URL_SIZE, URL_MIN_SIZE, URL_MIN_STRETCH = 8.0, 6.0, 80.0  # the link's font size in points, and its narrowest
TITLE = "Relais : lien vers votre résultat de test COVID-19"


def _printable(text: str) -> str:
    """``text`` in Windows-1252, the core font's encoding: other letters lose their accent (NFKD), else ``?``."""
    return fold_to(text, ENCODING)


def _qr_runs(url: str) -> tuple[int, list[tuple[int, int, int]]]:
    """The QR code of ``url`` (error correction M) as its side in modules (quiet zone included) and the runs of
    dark modules, ``(row, first column, length)``."""
    code = segno.make_qr(url, error="m", boost_error=False)
    runs: list[tuple[int, int, int]] = []
    for y, row in enumerate(code.matrix_iter(border=4)):
        start = -1
        for x, dark in enumerate([*row, False]):  # a light module past the end closes the last run
            if dark and start < 0:
                start = x
            elif not dark and start >= 0:
                runs.append((y, start, x - start))
                start = -1
    return int(code.symbol_size(border=4)[0]), runs


def link_line(pdf: FPDF, url: str, width: float) -> float:
    """The link as selectable text on one line, never broken inside (a copied link or a screen reader's reading
    stays whole): Courier (its letters and digits do not look alike) at the largest size up to ``URL_SIZE`` that fits
    ``width``; under ``URL_MIN_SIZE``, at that size narrowed down to ``URL_MIN_STRETCH`` % (the longest
    ``PUBLIC_BASE_URL`` allowed, 34 characters, with a token: 80 characters at 6 pt, 88 %). A link longer than that
    could be (none is) goes on two lines, broken after its ``#``. The horizontal stretching used, in %."""
    pdf.set_font("courier", "", URL_SIZE)
    size = min(URL_SIZE, URL_SIZE * width / pdf.get_string_width(url))
    stretch = 100.0
    if size < URL_MIN_SIZE:
        stretch, size = max(URL_MIN_STRETCH, 100 * size / URL_MIN_SIZE), URL_MIN_SIZE
    pdf.set_font("courier", "", size)
    pdf.set_stretching(stretch)
    head, fragment, token = url.partition("#")
    lines = [url] if pdf.get_string_width(url) <= width + 1e-6 else [head + fragment, token]
    for line in lines:
        pdf.cell(pdf.get_string_width(line), size * 0.45, line, link=url, new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    pdf.set_stretching(100)
    return stretch


def render_slip(text: SlipText) -> bytes:
    """The slip's PDF."""
    pdf = FPDF(unit="mm", format=(PAGE_WIDTH, PAGE_HEIGHT))
    pdf.core_fonts_encoding = ENCODING
    pdf.set_lang("fr-FR")
    pdf.set_title(TITLE)
    pdf.set_subject("Lien personnel vers un résultat de test (Relais)")
    pdf.set_creator("Relais")
    pdf.viewer_preferences = ViewerPreferences(display_doc_title=True)
    pdf.set_margins(MARGIN, MARGIN, MARGIN)
    pdf.set_auto_page_break(False)
    pdf.add_page()
    width = PAGE_WIDTH - 2 * MARGIN

    def paragraph(value: str, size: float, style: str = "", *, gap: float = 1.5) -> None:
        pdf.set_font("helvetica", style, size)
        pdf.multi_cell(
            width, size * 0.45, _printable(value), align=Align.L, wrapmode=WrapMode.WORD, new_x=XPos.LMARGIN,
            new_y=YPos.NEXT,
        )  # fmt: skip
        pdf.ln(gap)

    paragraph(text.title, 13, "B", gap=2)
    paragraph(text.pharmacy, 10, gap=2)
    paragraph(text.scan, 9)
    modules, runs = _qr_runs(text.url)
    module = QR_SIDE / modules
    left, top = (PAGE_WIDTH - QR_SIDE) / 2, pdf.get_y()
    pdf.set_fill_color(0, 0, 0)
    for row, column, length in runs:
        pdf.rect(left + column * module, top + row * module, length * module, module, style="F")
    pdf.set_y(top + QR_SIDE + 1)
    link_line(pdf, text.url, width)
    pdf.ln(2.5)
    paragraph(text.validity, 9)
    paragraph(text.birth_date, 9, "B")
    paragraph(text.keep, 8, gap=2.5)
    paragraph(text.english, 8, "I")
    if pdf.page != 1 or pdf.get_y() > PAGE_HEIGHT - MARGIN:  # pragma: no cover - the text is bounded
        raise ValueError("the slip does not fit one A6 page")
    return bytes(pdf.output())
