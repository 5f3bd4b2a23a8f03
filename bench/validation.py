"""Issue 11 figure: the validation cost of the worst 16 KiB body a signed pharmacy request can carry.

A body passes the signature check before it is validated, so any pharmacy key (or a stolen one) can send the
worst one. For each kind of costly body, filled up to the 16 KiB limit, this times what ``POST /v1/results``
does with a body before storing anything: ``load_json``, its canonical form (the idempotency hash),
``parse_submission`` and, when it is refused, the problem document's rendering. Figures: min, median and max
over ``BENCH_VALIDATION_RUNS`` runs (default 5, at least 3) of each body, in milliseconds, the errors reported
and the error document's size; ``worst_median_ms`` against the 20 ms target.

    python -m bench.validation
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

from chalicelib.domain.json_body import canonical_json, load_json
from chalicelib.domain.validation import parse_submission
from chalicelib.errors import ValidationError
from chalicelib.routes.problems import to_problem
from tests.factories import FIXED_NOW, valid_body

RUNS = max(3, int(os.environ.get("BENCH_VALIDATION_RUNS", "5")))
LIMIT = 16 * 1024
TARGET_MS = 20.0


def _with(path: str, value: Callable[[int], Any]) -> Callable[[int], dict[str, Any]]:
    """A body whose field ``path`` (dotted) is ``value(n)``."""

    def make(n: int) -> dict[str, Any]:
        body = valid_body(FIXED_NOW)
        *parents, name = path.split(".")
        target = body
        for parent in parents:
            target = target[parent]
        target[name] = value(n)
        return body

    return make


def _extra_fields(where: str, name: Callable[[int], str]) -> Callable[[int], dict[str, Any]]:
    """A body whose object ``where`` ("" for the top level) carries ``n`` unknown fields."""

    def make(n: int) -> dict[str, Any]:
        body = valid_body(FIXED_NOW)
        target = body[where] if where else body
        target.update({name(i): 0 for i in range(n)})
        return body

    return make


#: The costly bodies: each is filled with as many items as 16 KiB holds.
BODIES: dict[str, Callable[[int], dict[str, Any]]] = {
    "notify_bad_entries": _with("notify", lambda n: ["x"] * n),
    "notify_duplicates": _with("notify", lambda n: ["sms"] * n),
    "notify_distinct_bad_entries": _with("notify", lambda n: [str(i) for i in range(n)]),
    "unknown_fields": _extra_fields("", lambda i: f"x{i}"),
    "unknown_fields_in_patient": _extra_fields("patient", lambda i: f"x{i}"),
    "unknown_unsafe_field_names": _extra_fields("", lambda i: f"\u00e9{i}"),
    "long_unknown_field_names": _extra_fields("", lambda i: f"{i:04d}" + "a" * 60),
    "name_of_combining_accents": _with("patient.family_name", lambda n: "e\u0301" * n),
    "name_of_control_characters": _with("patient.family_name", lambda n: "\u0007" * n),
}


def encoded(body: dict[str, Any]) -> bytes:
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()


def fill(make: Callable[[int], dict[str, Any]]) -> bytes:
    """The body of ``make(n)`` for the largest ``n`` that keeps it within 16 KiB."""
    low, high = 0, LIMIT
    while low < high:
        middle = (low + high + 1) // 2
        if len(encoded(make(middle))) <= LIMIT:
            low = middle
        else:
            high = middle - 1
    return encoded(make(low))


def validate(raw: bytes) -> tuple[int, bool, int]:
    """What intake does with a body before storing it: (errors reported, truncated, error document bytes)."""
    document = load_json(raw, "application/json")
    canonical_json(document)
    try:
        parse_submission(document, now=FIXED_NOW)
    except ValidationError as exc:
        return len(exc.errors), exc.truncated, len(to_problem(exc).body)
    return 0, False, 0


def measure(raw: bytes) -> dict[str, Any]:
    validate(raw)  # warm: the first run pays imports and caches
    times: list[float] = []
    for _ in range(RUNS):
        started = time.perf_counter()
        errors, truncated, document_bytes = validate(raw)
        times.append((time.perf_counter() - started) * 1000)
    return {
        "body_bytes": len(raw),
        "min_ms": round(min(times), 3),
        "median_ms": round(statistics.median(times), 3),
        "max_ms": round(max(times), 3),
        "errors_reported": errors,
        "errors_truncated": truncated,
        "error_document_bytes": document_bytes,
    }


def main() -> int:
    figures = {name: measure(fill(make)) for name, make in BODIES.items()}
    worst = max(figures, key=lambda name: figures[name]["median_ms"])
    print(
        json.dumps(
            {
                "runs": RUNS,
                "bodies": figures,
                "worst_body": worst,
                "worst_median_ms": figures[worst]["median_ms"],
                "worst_max_ms": max(f["max_ms"] for f in figures.values()),
                "target_ms": TARGET_MS,
            },
            indent=2,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
