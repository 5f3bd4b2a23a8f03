"""A pharmacy client for the benches that run the local stack with its faults on: a signed POST, sent again (signed
afresh: a nonce is single-use) after a ``503`` or ``429`` when the answer's ``Retry-After`` says so, as the vendor
kit tells pharmacy software to do. Without it a bench fails on the throttling the local AWS simulates at random."""

from __future__ import annotations

import time
from types import MappingProxyType
from typing import Any, Final

#: The benches' stacks and in-process runs send every result of a run with one key (or a few), far faster than one
#: pharmacy may (the per-key rate, 20/s by default): lifted, so that the figures measure the path, not 429s.
LIFTED_KEY_RATE: Final = MappingProxyType({"RELAIS_KEY_REQUESTS_PER_SECOND": "10000"})

#: Answers that mean "send it again later" (contract: with ``Retry-After``).
RETRIED = frozenset({429, 503})


def post_signed(url: str, raw: bytes, *, key_id: str, private_key: Any, attempts: int = 6) -> Any:
    """POST ``raw`` signed as ``key_id``; the last answer (retried ones included after ``attempts`` tries)."""
    import requests

    from tests.signing import sign

    for attempt in range(attempts):
        headers = sign("POST", url, key_id=key_id, private_key=private_key, body=raw)
        answer = requests.post(url, data=raw, headers=headers, timeout=30)
        if answer.status_code not in RETRIED or attempt == attempts - 1:
            return answer
        time.sleep(min(5.0, float(answer.headers.get("Retry-After", "1"))))
    raise AssertionError("unreachable")
