"""The texts sent to patients (SMS and e-mail), in French by default and in English.

A message says only that a result from the named pharmacy is ready (or, after a correction, that it was corrected:
contract v2 §8), gives the link and how long it stays valid (docs/patient.md); a withdrawal's message says only
that the result sent earlier was withdrawn and to contact the pharmacy, with no link. The kind of message is a
:data:`MessageKind`. It never carries the result, the patient's identity, NIR or birth date. The functions here take
nothing else, so they cannot leak what they are never given. The e-mail's HTML part escapes every value; its subject
is fixed text (no value in a header).

Every SMS is one segment: at most 160 characters of the GSM 03.38 alphabet (``gsm0338`` counts them: the extension
characters, ``€`` ``{`` ``[``…, take two). One character outside that alphabet would send the whole SMS in UCS-2,
70 characters a segment, so the pharmacy's name is written in GSM 03.38 (``ô`` → ``o``), and cut to the room the
rest of the text leaves. :func:`sms_name_room` is that room; the settings refuse a ``PUBLIC_BASE_URL`` so long that
it would fall under :data:`MIN_SMS_NAME_ROOM`.
"""

from __future__ import annotations

import html
import re
import unicodedata
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo
from typing import Literal

import gsm0338  # noqa: F401 - registers the "gsm03.38" codec

Language = Literal["fr", "en"]
DEFAULT_LANGUAGE: Language = "fr"
#: ``ready``: the first message (and resends); ``corrected``: after a correction, with a new link; ``withdrawn``:
#: after a withdrawal (``entered_in_error``), without a link.
MessageKind = Literal["ready", "corrected", "withdrawn"]
LINKED_KINDS: tuple[MessageKind, ...] = ("ready", "corrected")
MAX_PHARMACY_NAME = 60
#: One SMS segment in the GSM 03.38 alphabet (septets).
SMS_MAX_SEPTETS = 160
#: The least room an SMS may leave for the pharmacy's name (the settings check it against PUBLIC_BASE_URL).
MIN_SMS_NAME_ROOM = 20
_GSM = "gsm03.38"
#: Letters and signs that GSM 03.38 lacks and that NFKD does not reduce to one it has.
_GSM_SPELLING = str.maketrans(
    {
        "œ": "oe",
        "Œ": "OE",
        "æ": "ae",
        "\u2018": "'",  # quotation marks
        "\u2019": "'",
        "\u201c": '"',
        "\u201d": '"',
        "«": '"',
        "»": '"',
        "\u2013": "-",  # dashes
        "\u2014": "-",
        "…": "...",
        "\u00a0": " ",  # no-break space
    }
)
_SMS: dict[MessageKind, dict[Language, str]] = {
    "ready": {
        "fr": "{name} : votre résultat COVID-19 : {url} (valable jusqu'au {until})",
        "en": "{name}: your COVID-19 result: {url} (valid until {until})",
    },
    "corrected": {
        # No longer than the first message's: the room left for the pharmacy's name stays what it was.
        "fr": "{name} : résultat COVID-19 corrigé : {url} (jusqu'au {until})",
        "en": "{name}: corrected COVID-19 result: {url} (until {until})",
    },
    "withdrawn": {
        "fr": "{name} : le résultat COVID-19 envoyé précédemment est retiré. Contactez la pharmacie.",
        "en": "{name}: the COVID-19 result sent earlier was withdrawn. Please contact the pharmacy.",
    },
}

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")

_MONTHS_FR = (
    "janvier", "février", "mars", "avril", "mai", "juin",
    "juillet", "août", "septembre", "octobre", "novembre", "décembre",
)  # fmt: skip
_MONTHS_EN = (
    "January", "February", "March", "April", "May", "June",
    "July", "August", "September", "October", "November", "December",
)  # fmt: skip


def _paris() -> tuple[tzinfo, bool]:
    """Europe/Paris when the time zone database is available, else UTC (and say so in the text)."""
    try:
        from zoneinfo import ZoneInfo

        return ZoneInfo("Europe/Paris"), True
    except Exception:
        return UTC, False


def link_url(public_base_url: str, token: str) -> str:
    """``{PUBLIC_BASE_URL}/r#{token}``: the token rides in the fragment, never sent to a server."""
    return f"{public_base_url.rstrip('/')}/r#{token}"


def clean_pharmacy_name(name: str) -> str:
    """The pharmacy name as shown in a message: no control characters, one line, bounded length."""
    flat = " ".join(_CONTROL.sub(" ", name).split())
    if len(flat) > MAX_PHARMACY_NAME:
        flat = flat[: MAX_PHARMACY_NAME - 1].rstrip() + "…"
    return flat or "Pharmacie"


def _long_time(moment: datetime, lang: Language) -> str:
    zone, paris = _paris()
    local = moment.astimezone(zone)
    if lang == "fr":
        label = "heure de Paris" if paris else "UTC"
        return f"{local.day} {_MONTHS_FR[local.month - 1]} {local.year} à {local:%H:%M} ({label})"
    label = "Paris time" if paris else "UTC"
    return f"{local.day} {_MONTHS_EN[local.month - 1]} {local.year} at {local:%H:%M} ({label})"


def fold_to(text: str, encoding: str) -> str:
    """``text`` with each character ``encoding`` lacks replaced by its letter without the accent (NFKD: ``ô`` → ``o``)
    when the encoding has that, else by ``?`` (emoji, other scripts)."""
    out = []
    for char in text:
        for candidate in (char, unicodedata.normalize("NFKD", char)[:1]):
            try:
                candidate.encode(encoding)
            except UnicodeEncodeError:
                continue
            out.append(candidate)
            break
        else:
            out.append("?")
    return "".join(out)


def gsm7(text: str) -> str:
    """``text`` in the GSM 03.38 alphabet: accents it lacks dropped (``ô`` → ``o``), other signs spelt out, the rest
    (emoji, other scripts) as ``?``."""
    return fold_to(text.translate(_GSM_SPELLING), _GSM)


def septets(text: str) -> int:
    """The length of ``text`` in an SMS (GSM 03.38 septets; ``UnicodeEncodeError`` outside that alphabet)."""
    return len(text.encode(_GSM))


def _sms_time(moment: datetime, lang: Language) -> str:
    zone, paris = _paris()
    local = moment.astimezone(zone)
    when = f"{local:%d/%m} {local:%H}h{local:%M}" if lang == "fr" else f"{local.day} {local:%b} {local:%H:%M}"
    return when if paris else f"{when} UTC"


def _fit(name: str, room: int) -> str:
    """``name`` within ``room`` septets: cut, ending with ``.``, when it is longer."""
    if septets(name) <= room:
        return name
    cut = name
    while cut and septets(cut) > room - 1:
        cut = cut[:-1]
    return cut.rstrip() + "."


def sms_name_room(url: str, expires_at: datetime, lang: Language, kind: MessageKind = "ready") -> int:
    """How many septets an SMS of ``kind`` with this link and expiry leaves for the pharmacy's name."""
    return SMS_MAX_SEPTETS - septets(_SMS[kind][lang].format(name="", url=url, until=_sms_time(expires_at, lang)))


def check_sms_link(public_base_url: str, token_length: int) -> None:
    """ValueError when links of ``public_base_url`` leave less than ``MIN_SMS_NAME_ROOM`` septets for the pharmacy's
    name in an SMS (in either language, with the longest date), or are not written in GSM 03.38."""
    url = link_url(public_base_url, "x" * token_length)
    try:
        room = min(
            sms_name_room(url, datetime(2026, 12, 25, 23, 59, tzinfo=UTC), lang, kind)
            for kind in LINKED_KINDS
            for lang in _SMS[kind]
        )
    except UnicodeEncodeError:
        raise ValueError("has characters an SMS cannot carry in GSM 03.38") from None
    if room < MIN_SMS_NAME_ROOM:
        raise ValueError(
            f"is too long for a one-segment SMS: it leaves {room} characters for the pharmacy's name, "
            f"at least {MIN_SMS_NAME_ROOM} are needed"
        )


def sms_text(
    *,
    pharmacy_name: str,
    url: str,
    expires_at: datetime,
    ttl_hours: int,
    lang: Language = DEFAULT_LANGUAGE,
    kind: MessageKind = "ready",
) -> str:
    """The SMS: pharmacy, link, validity (until when: ``ttl_hours`` after it is sent). Nothing else; one segment.
    A ``withdrawn`` SMS has neither link nor validity (``url`` and ``expires_at`` are then not written)."""
    del ttl_hours  # the SMS says until when; the e-mail says both
    name = _fit(gsm7(clean_pharmacy_name(pharmacy_name)), sms_name_room(url, expires_at, lang, kind))
    text = _SMS[kind][lang].format(name=name, url=url, until=_sms_time(expires_at, lang))
    if septets(text) > SMS_MAX_SEPTETS:  # pragma: no cover - the settings keep the link short enough
        raise ValueError("the SMS does not fit one segment: PUBLIC_BASE_URL is too long")
    return text


@dataclass(frozen=True)
class EmailContent:
    """An e-mail to send: fixed subject, plain-text part and HTML part."""

    subject: str
    text: str
    html: str


_SUBJECT: dict[MessageKind, dict[Language, str]] = {
    "ready": {"fr": "Votre résultat de test COVID-19 est disponible", "en": "Your COVID-19 test result is ready"},
    "corrected": {
        "fr": "Votre résultat de test COVID-19 a été corrigé",
        "en": "Your COVID-19 test result was corrected",
    },
    "withdrawn": {
        "fr": "Votre résultat de test COVID-19 a été retiré",
        "en": "Your COVID-19 test result was withdrawn",
    },
}


def _withdrawn_paragraphs(name: str, lang: Language) -> list[tuple[str, bool]]:
    """The withdrawal e-mail's paragraphs in one language: no link."""
    if lang == "fr":
        return [
            ("Bonjour,", False),
            (f"Le résultat de votre test COVID-19 réalisé par {name}, envoyé précédemment, a été retiré.", False),
            ("Le lien envoyé précédemment ne fonctionne plus. Contactez la pharmacie pour en savoir plus.", False),
            ("Relais ne vous demandera jamais votre numéro de sécurité sociale ni de coordonnées bancaires.", False),
        ]
    return [
        ("Hello,", False),
        (f"The result of your COVID-19 test taken at {name}, sent to you earlier, was withdrawn.", False),
        ("The link sent earlier no longer works. Please contact the pharmacy to know more.", False),
        ("Relais will never ask for your social security number or bank details.", False),
    ]


def _paragraphs(
    name: str, url: str, until: str, ttl_hours: int, lang: Language, kind: MessageKind
) -> list[tuple[str, bool]]:
    """The e-mail's paragraphs in one language; ``True`` marks the link paragraph."""
    if kind == "withdrawn":
        return _withdrawn_paragraphs(name, lang)
    if lang == "fr":
        news = (
            "a été corrigé ; le lien envoyé précédemment ne fonctionne plus"
            if kind == "corrected"
            else "est disponible"
        )
        return [
            ("Bonjour,", False),
            (f"Le résultat de votre test COVID-19 réalisé par {name} {news}.", False),
            ("Pour le consulter, ouvrez ce lien puis indiquez votre date de naissance :", False),
            (url, True),
            (
                f"Ce lien est personnel. Il reste valable {ttl_hours} heures, jusqu'au {until}. "
                "Passé ce délai, demandez un nouveau lien à votre pharmacie.",
                False,
            ),
            (
                "Ce message ne contient pas votre résultat. Relais ne vous demandera jamais votre numéro de "
                "sécurité sociale ni de coordonnées bancaires.",
                False,
            ),
        ]
    news = "was corrected; the link sent earlier no longer works" if kind == "corrected" else "is ready"
    return [
        ("Hello,", False),
        (f"The result of your COVID-19 test taken at {name} {news}.", False),
        ("To see it, open this link and enter your date of birth:", False),
        (url, True),
        (
            f"This link is personal. It remains valid for {ttl_hours} hours, until {until}. "
            "After that, ask your pharmacy for a new link.",
            False,
        ),
        (
            "This message does not contain your result. Relais will never ask for your social security number "
            "or bank details.",
            False,
        ),
    ]


def email_content(
    *,
    pharmacy_name: str,
    url: str,
    expires_at: datetime,
    ttl_hours: int,
    lang: Language = DEFAULT_LANGUAGE,
    kind: MessageKind = "ready",
) -> EmailContent:
    """The e-mail of ``kind`` in ``lang``; a French e-mail carries an English version below it."""
    name = clean_pharmacy_name(pharmacy_name)
    languages: list[Language] = [lang] if lang == "en" else ["fr", "en"]
    text_parts: list[str] = []
    html_parts: list[str] = []
    for i, language in enumerate(languages):
        paragraphs = _paragraphs(name, url, _long_time(expires_at, language), ttl_hours, language, kind)
        if i:
            text_parts.append("----\nEnglish version\n")
            html_parts.append('<hr><p lang="en"><strong>English version</strong></p>')
        text_parts.append("\n\n".join(p for p, _ in paragraphs))
        body = "".join(
            f'<p><a href="{html.escape(p, quote=True)}">{html.escape(p)}</a></p>'
            if is_link
            else f"<p>{html.escape(p)}</p>"
            for p, is_link in paragraphs
        )
        html_parts.append(f'<div lang="{language}">{body}</div>')
    text = "\n\n".join(text_parts) + "\n\n-- \nRelais\n"
    page = (
        f'<!doctype html><html lang="{lang}"><head><meta charset="utf-8">'
        f"<title>{html.escape(_SUBJECT[kind][lang])}</title></head>"
        f'<body style="font-family:sans-serif;line-height:1.5;color:#1a1a1a">{"".join(html_parts)}'
        "<p>-- <br>Relais</p></body></html>"
    )
    return EmailContent(subject=_SUBJECT[kind][lang], text=text, html=page)


@dataclass(frozen=True)
class SlipText:
    """The paper slip's text (contract v2 §7), in French with one English line: the pharmacy, the link, how long
    it stays valid and that the birth date will be asked. Nothing personal: it is given nothing else."""

    title: str
    pharmacy: str
    scan: str
    url: str
    validity: str
    birth_date: str
    keep: str
    english: str


def slip_text(*, pharmacy_name: str, url: str, expires_at: datetime, ttl_hours: int) -> SlipText:
    """The slip of this link (``adapters/slip_pdf.py`` lays it out on an A6 page)."""
    name = clean_pharmacy_name(pharmacy_name)
    return SlipText(
        title="Votre résultat de test COVID-19",
        pharmacy=f"Test réalisé par : {name}",
        scan="Pour le consulter, scannez ce code ou saisissez l'adresse ci-dessous :",
        url=url,
        validity=f"Ce lien est valable {ttl_hours} heures, jusqu'au {_long_time(expires_at, 'fr')}.",
        birth_date="Votre date de naissance vous sera demandée.",
        keep=(
            "Ce papier est personnel : ne le partagez pas. Passé ce délai, demandez un nouveau lien à votre pharmacie."
        ),
        english=(
            f"English: scan the code or type the link to see your COVID-19 test result; valid until "
            f"{_long_time(expires_at, 'en')}; you will be asked for your date of birth."
        ),
    )
