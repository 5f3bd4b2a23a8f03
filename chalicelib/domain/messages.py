"""The texts sent to patients (SMS and e-mail), in French by default and in English.

Contract §4: a message says only that a result from the named pharmacy is ready, gives the link and
how long it stays valid. It never carries the result, the patient's identity, NIR or birth date.
The functions here take nothing else, so they cannot leak what they are never given.
The e-mail's HTML part escapes every value; its subject is fixed text (no value in a header).
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo
from typing import Literal

Language = Literal["fr", "en"]
DEFAULT_LANGUAGE: Language = "fr"
MAX_PHARMACY_NAME = 60

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


def _short_time(moment: datetime, lang: Language) -> str:
    zone, paris = _paris()
    local = moment.astimezone(zone)
    label = {"fr": "heure de Paris", "en": "Paris time"}[lang] if paris else "UTC"
    if lang == "fr":
        return f"{local:%d/%m/%Y} à {local:%H:%M} ({label})"
    return f"{local:%d/%m/%Y} {local:%H:%M} ({label})"


def _long_time(moment: datetime, lang: Language) -> str:
    zone, paris = _paris()
    local = moment.astimezone(zone)
    if lang == "fr":
        label = "heure de Paris" if paris else "UTC"
        return f"{local.day} {_MONTHS_FR[local.month - 1]} {local.year} à {local:%H:%M} ({label})"
    label = "Paris time" if paris else "UTC"
    return f"{local.day} {_MONTHS_EN[local.month - 1]} {local.year} at {local:%H:%M} ({label})"


def sms_text(
    *, pharmacy_name: str, url: str, expires_at: datetime, ttl_hours: int, lang: Language = DEFAULT_LANGUAGE
) -> str:
    """The SMS: pharmacy, link, validity. Nothing else."""
    name = clean_pharmacy_name(pharmacy_name)
    until = _short_time(expires_at, lang)
    if lang == "fr":
        return (
            f"{name} : votre résultat de test COVID-19 est disponible. "
            f"Ouvrez {url} et indiquez votre date de naissance. "
            f"Lien valable {ttl_hours} h, jusqu'au {until}."
        )
    return (
        f"{name}: your COVID-19 test result is ready. "
        f"Open {url} and enter your date of birth. "
        f"The link is valid for {ttl_hours} hours, until {until}."
    )


@dataclass(frozen=True)
class EmailContent:
    """An e-mail to send: fixed subject, plain-text part and HTML part."""

    subject: str
    text: str
    html: str


_SUBJECT = {"fr": "Votre résultat de test COVID-19 est disponible", "en": "Your COVID-19 test result is ready"}


def _paragraphs(name: str, url: str, until: str, ttl_hours: int, lang: Language) -> list[tuple[str, bool]]:
    """The e-mail's paragraphs in one language; ``True`` marks the link paragraph."""
    if lang == "fr":
        return [
            ("Bonjour,", False),
            (f"Le résultat de votre test COVID-19 réalisé par {name} est disponible.", False),
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
    return [
        ("Hello,", False),
        (f"The result of your COVID-19 test taken at {name} is ready.", False),
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
    *, pharmacy_name: str, url: str, expires_at: datetime, ttl_hours: int, lang: Language = DEFAULT_LANGUAGE
) -> EmailContent:
    """The e-mail in ``lang``; a French e-mail carries an English version below it."""
    name = clean_pharmacy_name(pharmacy_name)
    languages: list[Language] = [lang] if lang == "en" else ["fr", "en"]
    text_parts: list[str] = []
    html_parts: list[str] = []
    for i, language in enumerate(languages):
        paragraphs = _paragraphs(name, url, _long_time(expires_at, language), ttl_hours, language)
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
        f"<title>{html.escape(_SUBJECT[lang])}</title></head>"
        f'<body style="font-family:sans-serif;line-height:1.5;color:#1a1a1a">{"".join(html_parts)}'
        "<p>-- <br>Relais</p></body></html>"
    )
    return EmailContent(subject=_SUBJECT[lang], text=text, html=page)
