"""The one reading of a JSON request body: its media type, then the document (415 or 400 otherwise).

Used by every endpoint that takes JSON — the pharmacy routes after authentication (so that a 415 or a 400
is committed with the request's audit event) and the patient route before its service. Also the one rule for
reporting an unknown key of a JSON object (:func:`unknown_field_error`), shared by every endpoint's validation.
"""

from __future__ import annotations

import json
import re
from typing import Any, Final

from chalicelib.errors import FieldError, UnsupportedMediaTypeError, ValidationError

JSON_MEDIA_TYPE = "application/json"
#: A key name that may be echoed in an error: it looks like an identifier, not like a value pasted as a key.
SAFE_FIELD_NAME: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")


def media_type(content_type: str | None) -> str:
    """``application/json; charset=utf-8`` → ``application/json`` (lower case, parameters dropped)."""
    return (content_type or "").split(";", 1)[0].strip().lower()


def load_json(body: bytes | str, content_type: str | None) -> Any:
    """The JSON document of ``body``; UnsupportedMediaTypeError unless the type is JSON, ValidationError
    (on the field ``body``) when it does not parse — nesting deeper than the parser's limit included."""
    if media_type(content_type) != JSON_MEDIA_TYPE:
        raise UnsupportedMediaTypeError("the body must be application/json")
    try:
        return json.loads(body)
    except (ValueError, RecursionError):  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise ValidationError([FieldError("body", "must be a JSON document")]) from None


def unknown_field_error(path: str, key: object) -> FieldError:
    """The error for the unknown key ``key`` of the object at ``path`` (``""``: the body itself).

    The key is named (``patient.nird: unknown field``) only when it looks like an identifier; any other key could be
    personal data pasted in the wrong place (``"Claire Martin 1984-12-03": ...``), and an error body never echoes a
    submitted value (contract §2, §5): the enclosing object is reported instead (``patient: contains an unknown
    field``, ``body`` at the top level).
    """
    if isinstance(key, str) and SAFE_FIELD_NAME.fullmatch(key):
        return FieldError(f"{path}.{key}" if path else key, "unknown field")
    return FieldError(path or "body", "contains an unknown field")


def canonical_json(document: Any) -> bytes:
    """A document's canonical form: key order and spacing ignored (what "identical body" compares)."""
    return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
