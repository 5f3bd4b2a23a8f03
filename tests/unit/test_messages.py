"""Patient messages: pharmacy, link, validity — never the result, identity or birth date; both languages."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

import pytest

from chalicelib.config import SettingsError, settings_from_env
from chalicelib.domain.links import new_token
from chalicelib.domain.messages import (
    MIN_SMS_NAME_ROOM,
    clean_pharmacy_name,
    email_content,
    gsm7,
    link_url,
    septets,
    sms_name_room,
    sms_text,
)
from relais_cli.pharmacy import NAME_MAX_LENGTH
from tests.unit.test_config import REQUIRED

EXPIRES = datetime(2026, 12, 3, 9, 0, tzinfo=UTC)  # 10:00 in Paris
TOKEN = "tK4s9Qw0ZpL2mN8vB6xR1cY3hJ7fD5gA0eU9iO2pW4q"
URL = link_url("https://relais.example/", TOKEN)
PERSONAL = (
    "Claire",
    "Martin",
    "1984-12-03",
    "03/12/1984",
    "284127512345687",
    "+33612345678",
    "claire@example.org",
    "négatif",
    "negative",
    "positif",
    "positive",
)


def test_the_link_carries_the_token_in_the_fragment():
    assert f"https://relais.example/r#{TOKEN}" == URL


@pytest.mark.parametrize("lang", ["fr", "en"])
def test_an_sms_names_the_pharmacy_gives_the_link_and_its_validity_only(lang):
    text = sms_text(pharmacy_name="Pharmacie du Marché", url=URL, expires_at=EXPIRES, ttl_hours=72, lang=lang)
    assert "Pharmacie du Marché" in text
    assert URL in text
    assert {"fr": "jusqu'au 03/12 10h00", "en": "until 3 Dec 10:00"}[lang] in text  # Paris time
    for value in PERSONAL:
        assert value not in text
    assert septets(text) <= 160


def test_the_sms_is_french_by_default():
    text = sms_text(pharmacy_name="P", url=URL, expires_at=EXPIRES, ttl_hours=72)
    assert "votre résultat COVID-19" in text and "valable jusqu'au" in text
    english = sms_text(pharmacy_name="P", url=URL, expires_at=EXPIRES, ttl_hours=72, lang="en")
    assert "your COVID-19 result" in english and "valid until" in english


@pytest.mark.parametrize("lang", ["fr", "en"])
def test_an_email_has_a_fixed_subject_a_text_and_an_html_part(lang):
    mail = email_content(pharmacy_name="Pharmacie du Marché", url=URL, expires_at=EXPIRES, ttl_hours=72, lang=lang)
    assert "COVID-19" in mail.subject and "Pharmacie" not in mail.subject
    for part in (mail.text, mail.html):
        assert URL in part and "72" in part and "2026" in part
        assert "Pharmacie du Marché" in part
        for value in PERSONAL:
            assert value not in part
    assert mail.html.startswith("<!doctype html>") and f'lang="{lang}"' in mail.html
    assert f'href="{URL}"' in mail.html


def test_a_french_email_carries_an_english_version():
    mail = email_content(pharmacy_name="P", url=URL, expires_at=EXPIRES, ttl_hours=72)
    assert "Bonjour" in mail.text and "English version" in mail.text and "Hello" in mail.text
    assert "3 décembre 2026 à 10:00" in mail.text and "3 December 2026 at 10:00" in mail.text
    only_english = email_content(pharmacy_name="P", url=URL, expires_at=EXPIRES, ttl_hours=72, lang="en")
    assert "Bonjour" not in only_english.text


def test_the_pharmacy_name_is_escaped_in_html_and_flattened_everywhere():
    name = 'Pharma <script>alert(1)</script> & "Co"\r\nBcc: x@example.org'
    mail = email_content(pharmacy_name=name, url=URL, expires_at=EXPIRES, ttl_hours=72)
    assert "<script>" not in mail.html and "&lt;script&gt;" in mail.html
    assert "\r" not in mail.text and "\nBcc:" not in mail.text
    sms = sms_text(pharmacy_name=name, url=URL, expires_at=EXPIRES, ttl_hours=72)
    assert "\n" not in sms and "\r" not in sms


def test_long_or_empty_pharmacy_names_are_bounded():
    assert len(clean_pharmacy_name("x" * 500)) == 60
    assert clean_pharmacy_name("\x00\n ") == "Pharmacie"


def test_messages_contain_no_placeholder_left():
    for lang in ("fr", "en"):
        text = sms_text(pharmacy_name="P", url=URL, expires_at=EXPIRES, ttl_hours=48, lang=lang)  # type: ignore[arg-type]
        assert not re.search(r"[{}]", text)


class Recorder:
    def __init__(self, error: Exception | None = None) -> None:
        self.calls: list[dict[str, Any]] = []
        self.error = error

    def publish(self, **kwargs):
        return self._record(kwargs)

    def send_email(self, **kwargs):
        return self._record(kwargs)

    def _record(self, kwargs):
        self.calls.append(kwargs)
        if self.error:
            raise self.error
        return {"MessageId": "m-1"}


def test_sms_are_transactional_with_the_sender_id_and_emails_use_the_configuration_set():
    from chalicelib.adapters.messaging import Messaging

    sns, ses = Recorder(), Recorder()
    messaging = Messaging(
        sns=sns, ses=ses, sms_sender_id="Relais", email_sender="r@relais.example", configuration_set="relais-events"
    )
    messaging.send_sms("+33612345678", "hello")
    attrs = sns.calls[0]["MessageAttributes"]
    assert attrs["AWS.SNS.SMS.SMSType"]["StringValue"] == "Transactional"
    assert attrs["AWS.SNS.SMS.SenderID"]["StringValue"] == "Relais"
    mail = email_content(pharmacy_name="P", url=URL, expires_at=EXPIRES, ttl_hours=72)
    messaging.send_email("claire@example.org", mail)
    call = ses.calls[0]
    assert call["ConfigurationSetName"] == "relais-events"
    assert set(call["Message"]["Body"]) == {"Text", "Html"}
    assert call["Destination"] == {"ToAddresses": ["claire@example.org"]}


def test_provider_errors_are_translated_without_their_text():
    from botocore.exceptions import ClientError

    from chalicelib.adapters.messaging import DeliveryError, Messaging

    error = ClientError({"Error": {"Code": "InvalidParameter", "Message": "+33612345678 is invalid"}}, "Publish")
    messaging = Messaging(sns=Recorder(error), ses=Recorder(error), sms_sender_id="Relais", email_sender="r@x.example")
    with pytest.raises(DeliveryError) as caught:
        messaging.send_sms("+33612345678", "hello")
    assert caught.value.permanent and "+33612345678" not in str(caught.value)
    assert caught.value.__cause__ is None and caught.value.__suppress_context__
    with pytest.raises(DeliveryError):
        messaging.send_sms("0612345678", "hello")  # not E.164: refused before SNS (which accepts anything)
    with pytest.raises(DeliveryError):
        messaging.send_email(
            "a@b.example\r\nBcc: c@d.example",
            email_content(pharmacy_name="P", url=URL, expires_at=EXPIRES, ttl_hours=72),
        )


# --- one SMS segment ------------------------------------------------------------------------------------------------

#: The longest base URL the settings accept: the one that leaves exactly MIN_SMS_NAME_ROOM for the name.
LONGEST_BASE = "https://" + "r" * 40 + ".fr"


def _longest_accepted_base() -> str:
    base = LONGEST_BASE
    while True:
        try:
            settings_from_env(REQUIRED | {"RELAIS_PUBLIC_BASE_URL": base})
            return base
        except SettingsError:
            base = base[:-4] + ".fr"


#: Worst cases for the name: only characters outside GSM 03.38, only two-septet ones, mixed accents.
LONGEST_NAMES = [
    "Pharmacie " + "ô" * (NAME_MAX_LENGTH - 10),
    "€" * NAME_MAX_LENGTH,
    ("Pharmacie de l\u2019Hôtel-Dieu \u2013 Cœur de Ville, Saint-Étienne «Centre» " * 4)[:NAME_MAX_LENGTH],
    "x" * NAME_MAX_LENGTH,
]


@pytest.mark.parametrize("lang", ["fr", "en"])
@pytest.mark.parametrize("name", LONGEST_NAMES, ids=["non-gsm", "extension", "french", "ascii"])
@pytest.mark.parametrize("expires", [EXPIRES, datetime(2026, 12, 25, 22, 59, tzinfo=UTC)])
@pytest.mark.parametrize("kind", ["ready", "corrected", "withdrawn"])
def test_every_sms_fits_one_gsm7_segment_with_the_longest_name_and_link_allowed(lang, name, expires, kind):
    base = _longest_accepted_base()
    url = link_url(base, new_token()) if kind != "withdrawn" else ""
    text = sms_text(pharmacy_name=name, url=url, expires_at=expires, ttl_hours=72, lang=lang, kind=kind)
    assert septets(text) <= 160  # raises UnicodeEncodeError for any character outside GSM 03.38
    if kind == "withdrawn":
        assert "/r#" not in text and ("retiré" if lang == "fr" else "withdrawn") in text
    else:
        assert url in text
        assert sms_name_room(url, expires, lang, kind) >= MIN_SMS_NAME_ROOM
    if kind == "corrected":
        assert ("corrigé" if lang == "fr" else "corrected") in text


@pytest.mark.parametrize("lang", ["fr", "en"])
@pytest.mark.parametrize("kind", ["corrected", "withdrawn"])
def test_a_correction_email_says_what_happened_and_only_a_correction_carries_a_link(lang, kind):
    url = link_url("https://relais.example.fr", new_token())
    mail = email_content(pharmacy_name="Pharmacie", url=url, expires_at=EXPIRES, ttl_hours=72, lang=lang, kind=kind)
    word = {("corrected", "fr"): "corrigé", ("corrected", "en"): "corrected"}.get((kind, lang))
    word = word or ("retiré" if lang == "fr" else "withdrawn")
    assert word in mail.subject and word in mail.text
    assert (url in mail.text) == (kind == "corrected") and (url in mail.html) == (kind == "corrected")


def test_a_base_url_that_leaves_no_room_for_the_name_is_refused_at_start_up():
    base = _longest_accepted_base()
    with pytest.raises(SettingsError, match="PUBLIC_BASE_URL is too long for a one-segment SMS"):
        settings_from_env(REQUIRED | {"RELAIS_PUBLIC_BASE_URL": base + "x"})
    with pytest.raises(SettingsError, match="cannot carry"):
        settings_from_env(REQUIRED | {"RELAIS_PUBLIC_BASE_URL": "https://pharmacie-rhône.fr"})


def test_names_are_written_in_gsm7_and_a_name_that_fits_is_kept_whole():
    assert gsm7("Pharmacie du Rhône \u2013 l\u2019Œil «Vert» 💊") == 'Pharmacie du Rhone - l\'OEil "Vert" ?'
    assert gsm7("Pharmacie Élysée à Besançon") == "Pharmacie Élysée à Besancon"  # É, é, à are GSM 03.38
    text = sms_text(pharmacy_name="Pharmacie du Rhône", url=URL, expires_at=EXPIRES, ttl_hours=72)
    assert text.startswith("Pharmacie du Rhone : ")


@pytest.mark.parametrize("lang", ["fr", "en"])
def test_the_longest_sms_of_the_documentation_stays_in_one_segment(lang):
    url = link_url("https://relais.example", new_token())
    text = sms_text(pharmacy_name="x" * NAME_MAX_LENGTH, url=url, expires_at=EXPIRES, ttl_hours=72, lang=lang)
    assert septets(text) == 160, "a long name fills the segment exactly"


def test_cloudformation_refuses_a_base_url_the_settings_would_refuse():
    import json
    from pathlib import Path

    prod = json.loads((Path(__file__).resolve().parents[2] / "infra" / "prod.json").read_text(encoding="utf-8"))
    assert prod["Parameters"]["PublicBaseUrl"]["MaxLength"] == len(_longest_accepted_base())
