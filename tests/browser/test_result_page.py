"""The result page in headless Chromium, end to end through the real app and its API."""

from __future__ import annotations

import io
import json
import time
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.browser.harness import BIRTH_DATE, PatientSite

pytestmark = pytest.mark.browser

RIGHT = "03/12/1984"
WRONG = "04/12/1984"
GENERIC_ERROR = "Ce lien n'est pas valide, a expiré, ou la date de naissance ne correspond pas."


def open_link(page: Any, site: PatientSite, token: str) -> None:
    page.goto(f"{site.base_url}/r#{token}")
    page.wait_for_selector("#birth-date", state="visible")


def submit(page: Any, date: str) -> None:
    page.fill("#birth-date", date)
    page.click("#submit")


def wait_for_answer(page: Any, timeout: float = 10.0) -> None:
    """Until the form shows an error or the result, and is usable again (polled: the CSP forbids eval)."""
    deadline = time.monotonic() + timeout
    script = """() => (document.getElementById('error').textContent !== '' ||
                      !document.getElementById('result').hidden) && !document.getElementById('submit').disabled"""
    while not page.evaluate(script):
        assert time.monotonic() < deadline, "no answer shown"
        page.wait_for_timeout(20)


def test_the_token_leaves_the_address_bar_at_once(page, site):
    _, token = site.new_link()
    open_link(page, site, token)
    assert token not in page.url and "#" not in page.url
    assert page.evaluate("location.hash") == ""


def test_the_right_birth_date_shows_the_result_and_nothing_comes_from_another_origin(page, site):
    requests: list[str] = []
    page.on("request", lambda request: requests.append(request.url))
    _, token = site.new_link(result="positive")
    open_link(page, site, token)
    submit(page, RIGHT)
    page.wait_for_selector("#result", state="visible")
    assert page.text_content("#result-value") == "positif"
    assert page.text_content("#patient-name") == "Claire Martin"
    assert page.text_content("#pharmacy-name") == "Pharmacie de la Gare"
    assert page.is_visible("#next-steps")
    assert page.input_value("#birth-date") == ""
    origin = urlsplit(site.base_url).netloc
    assert requests, "no request recorded"
    assert {urlsplit(url).netloc for url in requests} == {origin}
    assert all(token not in url for url in requests)


def test_a_wrong_birth_date_shows_the_generic_error(page, site):
    _, token = site.new_link()
    open_link(page, site, token)
    submit(page, WRONG)
    wait_for_answer(page)
    assert GENERIC_ERROR in page.text_content("#error")
    assert page.is_hidden("#result")
    assert page.get_attribute("#birth-date", "aria-invalid") == "true"


def test_a_link_cut_short_shows_the_generic_error_not_a_network_one(page, site):
    """A token no link can have (a link truncated by a mail client) is an unknown token: the API answers its 404."""
    _, token = site.new_link()
    open_link(page, site, token[:12])
    submit(page, RIGHT)
    wait_for_answer(page)
    assert GENERIC_ERROR in page.text_content("#error")
    assert page.is_hidden("#result")


def test_the_sixth_attempt_is_refused_even_with_the_right_date(page, site):
    _, token = site.new_link()
    open_link(page, site, token)
    for _ in range(5):
        submit(page, WRONG)
        wait_for_answer(page)
        page.evaluate("document.getElementById('error').textContent = ''")
    submit(page, RIGHT)
    wait_for_answer(page)
    assert GENERIC_ERROR in page.text_content("#error")
    assert page.is_hidden("#result")


def test_a_name_made_of_markup_renders_as_text(page, site):
    dialogs: list[str] = []

    def on_dialog(dialog: Any) -> None:
        dialogs.append(dialog.message)
        dialog.dismiss()

    page.on("dialog", on_dialog)
    _, token = site.new_link(given_name="<script>alert(1)</script>", family_name="<img src=x onerror=alert(2)>")
    open_link(page, site, token)
    submit(page, RIGHT)
    page.wait_for_selector("#result", state="visible")
    assert page.text_content("#patient-name") == "<script>alert(1)</script> <img src=x onerror=alert(2)>"
    assert page.evaluate("document.querySelectorAll('#result script, #result img').length") == 0
    page.wait_for_timeout(200)
    assert dialogs == []


def test_keyboard_only_use_works(page, site):
    _, token = site.new_link()
    open_link(page, site, token)
    for _ in range(6):
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.id") == "birth-date":
            break
    assert page.evaluate("document.activeElement.id") == "birth-date"
    page.keyboard.type(RIGHT)
    page.keyboard.press("Enter")
    page.wait_for_selector("#result", state="visible")
    assert page.evaluate("document.activeElement.id") == "result-heading"


def test_english_is_one_switch_away(page, site):
    _, token = site.new_link()
    open_link(page, site, token)
    page.click("#lang-switch")
    assert page.get_attribute("html", "lang") == "en"
    assert "Date of birth" in page.text_content("label[for=birth-date]")
    submit(page, RIGHT)
    page.wait_for_selector("#result", state="visible")
    assert page.text_content("#result-value") == "negative"


def test_the_page_fits_a_320_pixel_screen(browser, site):
    context = browser.new_context(viewport={"width": 320, "height": 640})
    try:
        page = context.new_page()
        _, token = site.new_link()
        open_link(page, site, token)
        assert page.evaluate("document.documentElement.scrollWidth") <= 320
        submit(page, RIGHT)
        page.wait_for_selector("#result", state="visible")
        assert page.evaluate("document.documentElement.scrollWidth") <= 320
    finally:
        context.close()


def test_an_incomplete_link_names_every_way_the_link_came_paper_included(page, site):
    page.goto(f"{site.base_url}/r")
    page.wait_for_selector("#no-token", state="visible")
    french = page.text_content("#no-token")
    assert "SMS" in french and "e-mail" in french and "papier remis par votre pharmacie" in french
    page.click("#lang-switch")
    english = page.text_content("#no-token")
    assert "text message" in english and "e-mail" in english and "paper slip from your pharmacy" in english
    noscript = page.evaluate("document.querySelector('noscript').textContent")
    assert "par SMS, par e-mail ou sur papier" in noscript


def test_the_csp_blocks_inline_script(page, site):
    response = page.goto(f"{site.base_url}/r")
    assert response is not None
    assert "script-src 'self'" in response.headers["content-security-policy"]
    page.wait_for_selector("#no-token", state="visible")
    blocked = page.evaluate(
        """() => new Promise((resolve) => {
            document.addEventListener('securitypolicyviolation', () => resolve(true), {once: true});
            const s = document.createElement('script');
            s.textContent = 'window.__inline = 1';
            document.head.appendChild(s);
            setTimeout(() => resolve(window.__inline !== 1 ? true : false), 500);
        })"""
    )
    assert blocked is True


def serious_violations(page: Any, axe: str) -> list[dict[str, Any]]:
    page.add_script_tag(path=axe)
    results = page.evaluate("async () => await axe.run(document, {resultTypes: ['violations']})")
    return [
        {"id": v["id"], "impact": v["impact"], "nodes": [n["target"] for n in v["nodes"]]}
        for v in results["violations"]
        if v["impact"] in ("serious", "critical")
    ]


def test_axe_finds_no_serious_or_critical_violation(browser, site, axe_script):
    # axe is injected as a script, which the page's CSP rightly forbids: this context bypasses the CSP.
    context = browser.new_context(bypass_csp=True, viewport={"width": 390, "height": 800})
    try:
        page = context.new_page()
        _, token = site.new_link(result="positive")
        open_link(page, site, token)
        found = serious_violations(page, str(axe_script))
        submit(page, WRONG)
        wait_for_answer(page)
        found += serious_violations(page, str(axe_script))
        submit(page, RIGHT)
        page.wait_for_selector("#result", state="visible")
        found += serious_violations(page, str(axe_script))
        page.click("#lang-switch")
        found += serious_violations(page, str(axe_script))
        assert found == [], json.dumps(found, indent=1)
    finally:
        context.close()


def test_seeded_birth_date_is_the_one_typed(site):
    assert BIRTH_DATE == "1984-12-03"


def test_the_result_prints_on_one_page_without_the_form_or_buttons(page, site):
    """A copy for the patient (issue 13): the print stylesheet alone (no script) hides the chrome and keeps the
    result, the pharmacy and the dates, on one page of A4 and of Letter."""
    _, token = site.new_link(result="positive")
    open_link(page, site, token)
    submit(page, RIGHT)
    page.wait_for_selector("#result", state="visible")

    page.emulate_media(media="print")

    for chrome in ("#lang-switch", "#form", "#submit", "#birth-date", "#no-token"):
        assert not page.is_visible(chrome), chrome
    for shown in ("#result-value", "#pharmacy-name", "#sampled-at", "#test-kind", "#patient-name", "#next-steps"):
        assert page.is_visible(shown), shown
    from pypdf import PdfReader

    for paper in ("A4", "Letter"):
        pdf = page.pdf(format=paper, print_background=True)
        reader = PdfReader(io.BytesIO(pdf))
        assert len(reader.pages) == 1, paper
        text = reader.pages[0].extract_text()
        assert "positif" in text and "Pharmacie de la Gare" in text
        assert "Voir mon résultat" not in text
