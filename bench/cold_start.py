"""One cold API process, run by ``bench/http_intake.py``: ``python -m bench.cold_start EVENTS_FILE``.

It imports ``app.py`` as Lambda does, then hands it the API Gateway (REST, proxy) events of ``EVENTS_FILE`` (signed
``POST /v1/results`` built by the parent) one after the other, as one warm Lambda instance would, against the AWS
of the environment (the local stack's moto server). It counts every AWS call from before the first request
(botocore's single call path, :mod:`bench.awscalls`) and notes which modules the first request imported beyond
``import app``. It prints one JSON document: import and request times, statuses, AWS calls by operation, and the
modules (in import order) that the parent then times cold together with ``import app``.

Nothing heavy is imported before ``import app``: the module lists are what a cold Lambda would import.
"""

import json
import sys
import time


class _Context:
    """What handlers read of Lambda's context object."""

    function_name = "relais-local-api"
    function_version = "$LATEST"
    invoked_function_arn = "arn:aws:lambda:eu-west-3:000000000000:function:relais-local-api"
    memory_limit_in_mb = 512
    aws_request_id = "bench-cold-start"

    def __init__(self, timeout_s: float = 10.0) -> None:
        self._deadline = time.monotonic() + timeout_s

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))


def main(events_file: str) -> int:
    started = time.perf_counter()
    import app

    import_ms = (time.perf_counter() - started) * 1000
    imported_by_app = set(sys.modules)
    from bench.awscalls import counting_aws_calls  # botocore.client: app.py imports it already

    with open(events_file, encoding="utf-8") as source:
        events = json.load(source)
    statuses: dict[str, int] = {}
    request_ms: list[float] = []
    first_modules: list[str] = []
    refused: list[dict[str, object]] = []
    with counting_aws_calls() as calls:
        for index, event in enumerate(events):
            begun = time.perf_counter()
            answer = app.app(event, _Context())
            request_ms.append((time.perf_counter() - begun) * 1000)
            status = str(answer.get("statusCode"))
            statuses[status] = statuses.get(status, 0) + 1
            if status != "201" and len(refused) < 5:  # problem documents: codes and opaque ids, no personal data
                refused.append({"index": index, "status": status, "body": str(answer.get("body"))[:300]})
            if index == 0:
                first_modules = [
                    name
                    for name, module in list(sys.modules.items())
                    if name not in imported_by_app
                    and not name.startswith("bench")  # this harness
                    and getattr(module, "__spec__", None) is not None
                ]
    warm = sorted(request_ms[1:]) or [0.0]
    print(
        json.dumps(
            {
                "import_app_ms": round(import_ms, 1),
                "first_request_ms": round(request_ms[0], 1),
                "warm_request_ms_median": round(warm[len(warm) // 2], 1),
                "requests": len(events),
                "statuses": statuses,
                "refused": refused,
                "aws_calls": {k: v for k, v in sorted(calls.items()) if not k.startswith("seconds:")},
                "first_request_modules": first_modules,
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
