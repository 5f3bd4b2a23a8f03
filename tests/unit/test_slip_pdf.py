"""The paper slip's PDF (contract v2 §7): one A6 page, French with an English line, the link as a QR code and as
selectable text, nothing personal, under 50 KB; and its libraries stay out of every other request's imports."""

from __future__ import annotations

import inspect
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from chalicelib.adapters.slip_pdf import render_slip
from chalicelib.domain.messages import slip_text
from tests.pdf_reading import read_slip

ROOT = Path(__file__).resolve().parents[2]
URL = "https://resultats.relais.example.fr/r#" + "Tk3_-q" * 7 + "Z"
EXPIRES = datetime(2026, 12, 5, 10, 0, tzinfo=UTC)
#: The libraries only the slip may import (fpdf2 and its dependencies, segno).
SLIP_LIBRARIES = ("fpdf", "segno", "PIL", "fontTools", "defusedxml")


def make(name: str = "Pharmacie de l'Église à Bâle", url: str = URL, ttl_hours: int = 72) -> bytes:
    return render_slip(slip_text(pharmacy_name=name, url=url, expires_at=EXPIRES, ttl_hours=ttl_hours))


def test_one_a6_page_under_50_kb():
    pdf = make()
    read = read_slip(pdf)
    assert read.pages == 1
    assert read.width_mm == pytest.approx(105, abs=0.5) and read.height_mm == pytest.approx(148, abs=0.5)
    assert len(pdf) < 50 * 1024


def test_the_qr_code_decodes_to_the_link_which_is_also_selectable_text():
    read = read_slip(make())
    assert read.qr_codes == (URL,)
    assert URL in read.flat_text


def test_french_text_with_accents_and_an_english_line():
    text = read_slip(make()).prose
    assert "Pharmacie de l'Église à Bâle" in text
    assert "Votre résultat de test COVID-19" in text
    assert "valable 72 heures, jusqu'au 5 décembre 2026 à 11:00 (heure de Paris)" in text
    assert "Votre date de naissance vous sera demandée." in text
    assert "English:" in text and "you will be asked for your date of birth" in text
    assert "valid until 5 December 2026 at 11:00 (Paris time)" in text


def test_language_and_title_for_screen_readers():
    read = read_slip(make())
    assert read.lang == "fr-FR"
    assert "résultat" in read.title


def test_a_name_outside_windows_1252_is_written_without_failing():
    text = read_slip(make(name="Apteka Łódź \U0001f48a Œuvre")).prose
    assert "Apteka ?ódz ? Œuvre" in text  # ó is in Windows-1252; Ł has no decomposition


def test_the_slip_is_given_nothing_personal():
    """The slip's text is made from these values only: no name, NIR, birth date or result can reach it."""
    assert set(inspect.signature(slip_text).parameters) == {"pharmacy_name", "url", "expires_at", "ttl_hours"}
    assert set(inspect.signature(render_slip).parameters) == {"text"}


def test_a_long_link_still_fits_one_page():
    url = "https://resultats-covid.pharmacies.relais.example.fr/r#" + "x" * 64
    read = read_slip(make(name="P" * 80, url=url, ttl_hours=168))
    assert read.pages == 1
    assert read.qr_codes == (url,)


def longest_link() -> str:
    """A link of the longest ``PUBLIC_BASE_URL`` the settings allow (34 characters) and a token of ``new_token``."""
    from chalicelib.domain.links import new_token
    from chalicelib.domain.messages import check_sms_link, link_url

    base = "https://resultats-covid.example.fr"
    assert len(base) == 34
    check_sms_link(base, len(new_token()))  # allowed
    with pytest.raises(ValueError, match="too long"):
        check_sms_link(base + "x", len(new_token()))  # and the longest allowed
    return link_url(base, new_token().replace("-", "W").replace("_", "M"))  # the widest letters stay on one line


@pytest.mark.parametrize("url", [URL, "https://a.fr/r#" + "Tk3_-q" * 7 + "Z", "longest"])
def test_the_link_is_one_unbroken_line_of_the_text(url):
    url = longest_link() if url == "longest" else url
    read = read_slip(make(url=url))
    assert url in read.text.splitlines(), read.text  # a line of its own, no break inside
    assert read.qr_codes == (url,)


def test_the_link_is_printed_at_6_points_at_least(monkeypatch):
    from chalicelib.adapters import slip_pdf

    sizes: list[tuple[float, float]] = []
    real = slip_pdf.link_line

    def spy(pdf, url, width) -> float:
        stretch = real(pdf, url, width)
        sizes.append((pdf.font_size_pt, pdf.get_string_width(url) * stretch / 100 / width))
        return stretch

    monkeypatch.setattr(slip_pdf, "link_line", spy)
    make(url=longest_link())
    make(url="https://a.fr/r#" + "Tk3_-q" * 7 + "Z")
    (longest, longest_share), (short, short_share) = sizes
    assert longest == 6 and longest_share == pytest.approx(1)  # narrowed to fit
    assert 6 < short < 8 and short_share == pytest.approx(1)  # as large as fits


def test_a_link_longer_than_any_allowed_breaks_only_after_its_hash():
    url = "https://resultats-covid.pharmacies.relais.example.fr/r#" + "x" * 64
    lines = read_slip(make(url=url)).text.splitlines()
    assert "https://resultats-covid.pharmacies.relais.example.fr/r#" in lines and "x" * 64 in lines


def test_importing_the_app_and_every_other_module_leaves_the_pdf_and_qr_libraries_out():
    """A cold start of any other request imports none of them: the slip path alone does (bench/slip.py times it)."""
    modules = sorted(
        ".".join(path.relative_to(ROOT).with_suffix("").parts)
        for path in (ROOT / "chalicelib").rglob("*.py")
        if path.name != "slip_pdf.py"
    )
    code = (
        "import sys, importlib\n"
        "import app\n"
        f"for name in {modules!r}: importlib.import_module(name)\n"
        f"print(sorted(m for m in sys.modules if m.split('.')[0] in {SLIP_LIBRARIES!r}))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_only_the_slip_adapter_imports_them_and_only_the_slip_service_imports_it():
    from tests.unit.test_architecture import _imported_modules

    importers = {
        str(path.relative_to(ROOT))
        for path in [*(ROOT / "chalicelib").rglob("*.py"), ROOT / "app.py"]
        for module in _imported_modules(path)
        if module.split(".")[0] in SLIP_LIBRARIES or module == "chalicelib.adapters.slip_pdf"
    }
    assert importers == {"chalicelib/adapters/slip_pdf.py", "chalicelib/bootstrap.py"}
    source = (ROOT / "chalicelib" / "bootstrap.py").read_text(encoding="utf-8")
    assert source.count("chalicelib.adapters.slip_pdf") == 1
    assert "from chalicelib.adapters.slip_pdf import render_slip" in inspect.getsource(
        __import__("chalicelib.bootstrap", fromlist=["slip_service"]).slip_service
    )
