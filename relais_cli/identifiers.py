"""Check digits of the identifiers the CLI handles: FINESS (pharmacies), and RPPS/NIR for the demo sample.

FINESS (Fichier national des établissements sanitaires et sociaux) numbers have 9 characters: a two-character
département code (two digits, or ``2A``/``2B`` for Corsica), six digits, and a Luhn check digit over the first
eight. python-stdnum has no FINESS module (``stdnum.fr`` covers NIR, NIF, SIREN, SIRET, TVA, RCS, accise), so the
rule is written here on top of ``stdnum.luhn``: for the key, Corsica's ``2A`` and ``2B`` count as ``20`` (the
single Corsican département code they replaced in 1976). Other départements are not checked against a list.
"""

from __future__ import annotations

import re

from stdnum import luhn
from stdnum.fr import nir as stdnum_nir

FINESS_LENGTH = 9
_FINESS_SHAPE = re.compile(r"(?:\d{2}|2A|2B)\d{7}")
_CORSICA = {"2A": "20", "2B": "20"}


def normalise_finess(value: str) -> str:
    """Spaces removed, letters upper-cased (``2a 000 001 6`` → ``2A0000016``)."""
    return "".join(value.split()).upper()


def _finess_digits(finess: str) -> str:
    return _CORSICA.get(finess[:2], finess[:2]) + finess[2:]


def finess_check_digit(first_eight: str) -> str:
    """The Luhn check digit that completes the first eight characters of a FINESS number."""
    first_eight = normalise_finess(first_eight)
    if not _FINESS_SHAPE.fullmatch(first_eight + "0"):
        raise ValueError("a FINESS number starts with two digits (or 2A/2B) followed by six digits")
    return str(luhn.calc_check_digit(_finess_digits(first_eight)))


def finess_problem(value: str) -> str | None:
    """Why ``value`` is not a valid FINESS number, or None when it is (after :func:`normalise_finess`)."""
    finess = normalise_finess(value)
    if len(finess) != FINESS_LENGTH:
        return f"a FINESS number has {FINESS_LENGTH} characters"
    if not _FINESS_SHAPE.fullmatch(finess):
        return "a FINESS number is 9 digits (2A or 2B allowed first for Corsica)"
    if not luhn.is_valid(_finess_digits(finess)):
        return "the FINESS check digit (Luhn key) is wrong"
    return None


def with_finess_key(first_eight: str) -> str:
    """``first_eight`` followed by its check digit: a valid FINESS number."""
    return normalise_finess(first_eight) + finess_check_digit(first_eight)


def with_rpps_key(first_ten: str) -> str:
    """An 11-digit RPPS number: ``first_ten`` and its Luhn check digit."""
    return first_ten + str(luhn.calc_check_digit(first_ten))


def with_nir_key(first_thirteen: str) -> str:
    """A 15-character NIR: ``first_thirteen`` and its two-digit control key (97 - n mod 97, Corsica mapped)."""
    return first_thirteen + str(stdnum_nir.calc_check_digits(first_thirteen))
