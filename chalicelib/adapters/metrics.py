"""CloudWatch metrics in embedded metric format (Powertools Metrics): names and numbers only.

Powertools keeps one metric set per process; a lock keeps it whole when threads share the process (``chalice
local`` and the local poller run handlers concurrently; Lambda runs one invocation at a time).
"""

from __future__ import annotations

import threading
from typing import Any

#: Powertools' metric set is per process, so is the lock (even if two EmfMetrics are built).
_LOCK = threading.Lock()


class EmfMetrics:
    def __init__(self, namespace: str = "Relais", service: str = "relais") -> None:
        from aws_lambda_powertools import Metrics

        self._metrics: Any = Metrics(namespace=namespace, service=service)
        self._pending = False

    def count(self, name: str, value: float = 1) -> None:
        from aws_lambda_powertools.metrics import MetricUnit

        with _LOCK:
            self._pending = True
            self._metrics.add_metric(name=name, unit=MetricUnit.Count, value=value)

    def latency(self, name: str, seconds: float) -> None:
        from aws_lambda_powertools.metrics import MetricUnit

        with _LOCK:
            self._pending = True
            self._metrics.add_metric(name=name, unit=MetricUnit.Seconds, value=round(seconds, 3))

    def percent(self, name: str, value: float) -> None:
        from aws_lambda_powertools.metrics import MetricUnit

        with _LOCK:
            self._pending = True
            self._metrics.add_metric(name=name, unit=MetricUnit.Percent, value=round(value, 2))

    def flush(self) -> None:
        """Write the metrics of this invocation (one EMF line on stdout, picked up by CloudWatch); nothing when
        none was added since the last flush."""
        with _LOCK:
            if self._pending:
                self._metrics.flush_metrics(raise_on_empty_metrics=False)
                self._pending = False
