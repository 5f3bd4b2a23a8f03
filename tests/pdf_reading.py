"""Reading a slip back as a person would: its text (pypdf), its page as an image (pypdfium2), its QR code (zxing-cpp).

Shared by the unit, integration and e2e tiers (dev dependencies only: requirements-dev.txt).
"""

from __future__ import annotations

import io
from dataclasses import dataclass

MM_PER_POINT = 25.4 / 72


@dataclass(frozen=True)
class ReadSlip:
    pages: int
    width_mm: float
    height_mm: float
    text: str  # the page's text as extracted, lines joined by newlines
    lang: str
    title: str
    qr_codes: tuple[str, ...]  # what every QR code on the page decodes to

    @property
    def flat_text(self) -> str:
        """The text with its line breaks removed (a link wrapped over two lines reads as one)."""
        return self.text.replace("\n", "")

    @property
    def prose(self) -> str:
        """The text with every run of white space, line breaks included, as one space (wrapped sentences read whole)."""
        return " ".join(self.text.split())


def read_slip(pdf: bytes) -> ReadSlip:
    import pypdf
    import pypdfium2
    import zxingcpp

    reader = pypdf.PdfReader(io.BytesIO(pdf))
    page = reader.pages[0]
    box = page.mediabox
    document = pypdfium2.PdfDocument(pdf)
    try:
        image = document[0].render(scale=4).to_pil()
    finally:
        document.close()
    metadata = reader.metadata or {}
    return ReadSlip(
        pages=len(reader.pages),
        width_mm=float(box.width) * MM_PER_POINT,
        height_mm=float(box.height) * MM_PER_POINT,
        text=page.extract_text(),
        lang=str(reader.trailer["/Root"].get("/Lang", "")),
        title=str(metadata.get("/Title", "")),
        qr_codes=tuple(result.text for result in zxingcpp.read_barcodes(image)),
    )
