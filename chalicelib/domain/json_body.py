"""The one reading of a JSON request body: its media type, then the document (415 or 400 otherwise).

Used by every endpoint that takes JSON — the pharmacy routes after authentication (so that a 415 or a 400
is committed with the request's audit event) and the patient route before its service.
"""

from __future__ import annotations

import json
from typing import Any

from chalicelib.errors import FieldError, UnsupportedMediaTypeError, ValidationError

JSON_MEDIA_TYPE = "application/json"


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


def canonical_json(document: Any) -> bytes:
    """A document's canonical form: key order and spacing ignored (what "identical body" compares)."""
    return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
