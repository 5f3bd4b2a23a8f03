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

import unicodedata

import segno
from fpdf import FPDF, ViewerPreferences
from fpdf.enums import Align, WrapMode, XPos, YPos

from chalicelib.domain.messages import SlipText

#: A6 portrait, in millimetres.
PAGE_WIDTH, PAGE_HEIGHT = 105.0, 148.0
MARGIN = 8.0
QR_SIDE = 42.0  # the QR code's side with its quiet zone (4 modules): about 1 mm a module for a version 5 code
ENCODING = "windows-1252"
TITLE = "Relais : lien vers votre résultat de test COVID-19"


def _printable(text: str) -> str:
    """``text`` in Windows-1252, the core font's encoding: other letters lose their accent (NFKD), else ``?``."""
    out = []
    for char in text:
        for candidate in (char, unicodedata.normalize("NFKD", char)[:1]):
            try:
                candidate.encode(ENCODING)
            except UnicodeEncodeError:
                continue
            out.append(candidate)
            break
        else:
            out.append("?")
    return "".join(out)


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

    def paragraph(value: str, size: float, style: str = "", *, gap: float = 1.5, wrap: WrapMode = WrapMode.WORD,
                  family: str = "helvetica", link: str | None = None) -> None:  # fmt: skip
        pdf.set_font(family, style, size)
        pdf.multi_cell(
            width,
            size * 0.45,
            _printable(value),
            align=Align.L,
            wrapmode=wrap,
            link=link,
            new_x=XPos.LMARGIN,
            new_y=YPos.NEXT,
        )
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
    paragraph(text.url, 8, family="courier", wrap=WrapMode.CHAR, link=text.url, gap=2.5)
    paragraph(text.validity, 9)
    paragraph(text.birth_date, 9, "B")
    paragraph(text.keep, 8, gap=2.5)
    paragraph(text.english, 8, "I")
    if pdf.page != 1 or pdf.get_y() > PAGE_HEIGHT - MARGIN:  # pragma: no cover - the text is bounded
        raise ValueError("the slip does not fit one A6 page")
    return bytes(pdf.output())
