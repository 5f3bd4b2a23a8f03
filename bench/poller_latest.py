"""``python -m infra.local.poller``, except that a stream shard it has never read starts at ``LATEST``.

The HTTP benchmark (``bench/http_intake.py``) stores 10,000 results' worth of items directly in the tables (as
processed results leave them), then restarts the poller with this: the seeded items are stored, as if relayed
long ago, and only what arrives afterwards is relayed, as the stack's own poller would (it reads every shard from
``TRIM_HORIZON`` and would otherwise queue 10,000 old results again). Nothing else differs.
"""

from __future__ import annotations

import sys
from typing import Any

from infra.local import poller


def _from_latest(self: Any, stream: Any, shard: Any) -> str:
    if shard.last_sequence is not None:
        return _original(self, stream, shard)
    answer = self._streams.get_shard_iterator(StreamArn=stream.arn, ShardId=shard.shard_id, ShardIteratorType="LATEST")
    return str(answer["ShardIterator"])


_original = poller.Poller._shard_iterator
poller.Poller._shard_iterator = _from_latest  # type: ignore[method-assign]

if __name__ == "__main__":
    sys.exit(poller.main())
