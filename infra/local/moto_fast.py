"""Some of moto's costs that AWS does not have, cut without changing an answer.

Profiled on the local stack at intake (py-spy, GIL samples of the moto server, workers paused), a quarter of moto's
CPU went into serializing DynamoDB's answers and a fifth into parsing update expressions:

- **Answers.** moto serializes every answer by walking botocore's output shape member by member (attribute pickers,
  name aliases, one Python call per value): 0.5-1 ms for a ``TransactWriteItems`` whose answer is two empty fields.
  DynamoDB's JSON protocol answers the result itself: for the data-plane operations whose results moto builds as
  plain dicts of strings, numbers, booleans and bytes (:data:`FAST_OPERATIONS`), the answer is written by
  ``json.dumps`` with bytes in base64 and ``None`` members left out, as the shape walk does. Anything else (a
  timestamp, a model object, an error) goes through moto's serializer as before.
- **Update expressions.** moto parses each ``UpdateExpression`` twice per write (the handler's validation, then the
  backend's update), and its validator rewrites a ``deepcopy`` of the tree. The parse depends on the expression's
  text only: the tree is kept per text (Relais sends a few dozen distinct texts) and shared, since nothing changes
  it; the validator's copy of a kept tree is unpickled from bytes kept beside it (0.05 ms, where a parse took
  0.12 ms and moto's ``deepcopy`` 0.12 ms).
- **Method lookup.** moto lists a handler class's methods with ``inspect.getmembers`` on every request; the list is
  kept per class.

``tests/integration/test_moto_fast.py`` runs every operation of :data:`FAST_OPERATIONS` with both serializers and
compares the answers.
"""

from __future__ import annotations

import base64
import copy
import functools
import json
import pickle
import threading
from typing import Any, Final

#: DynamoDB operations whose successful answer is written straight from moto's result dict.
FAST_OPERATIONS: Final = frozenset(
    {
        "GetItem",
        "PutItem",
        "UpdateItem",
        "DeleteItem",
        "BatchGetItem",
        "BatchWriteItem",
        "TransactGetItems",
        "TransactWriteItems",
        "Query",
        "Scan",
    }
)
CONTENT_TYPE: Final = "application/x-amz-json-1.0"
#: Distinct update expressions kept parsed (the cache starts over past it).
PARSED_LIMIT: Final = 4096


class _NotPlain(Exception):
    """The result holds something only moto's serializer knows how to write."""


def plain(value: Any) -> Any:
    """``value`` as DynamoDB's JSON protocol writes it: bytes in base64, ``None`` members left out."""
    if isinstance(value, dict):
        return {key: plain(item) for key, item in value.items() if item is not None}
    if isinstance(value, list):
        return [plain(item) for item in value]
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    if value is None or isinstance(value, str | int | float):  # bool is an int
        return value
    raise _NotPlain(type(value).__name__)


@functools.cache
def _output_members(operation: str) -> frozenset[str]:
    from moto.core.utils import get_service_model

    shape = get_service_model("dynamodb").operation_model(operation).output_shape
    return frozenset(shape.members) if shape is not None else frozenset()


def fast_answer(operation: str, result: object) -> str | None:
    """The answer's body written straight from ``result``, or None where moto's serializer must write it.

    Only the output shape's members are written, as moto's serializer does (moto's ``DeleteItem`` result, for one,
    carries a ``ConsumedCapacityUnits`` that DynamoDB does not answer)."""
    if operation not in FAST_OPERATIONS or not isinstance(result, dict):
        return None
    members = _output_members(operation)
    try:
        return json.dumps(plain({k: v for k, v in result.items() if k in members}), separators=(",", ":"))
    except _NotPlain:
        return None


#: Set by a test: every fast answer is also written by moto's serializer, and differences are kept here.
compare: list[tuple[str, Any, Any]] | None = None


def _patch_answers() -> None:
    from moto.core.responses import ActionResult
    from moto.dynamodb.responses import DynamoHandler, DynamoResult

    original = DynamoHandler.serialized
    kinds = (ActionResult, DynamoResult)  # EmptyResult, PaginatedResult and errors keep moto's path

    @functools.wraps(original)
    def serialized(self: Any, action_result: Any) -> Any:
        action = self._get_action()
        body = fast_answer(action, action_result.result) if type(action_result) in kinds else None
        if body is None:
            return original(self, action_result)
        if compare is not None:
            expected, answered = json.loads(original(self, action_result)[2]), json.loads(body)
            if expected != answered:
                compare.append((action, expected, answered))
        headers = {"Content-Type": CONTENT_TYPE}
        headers.update(self.response_headers)
        return 200, headers, body

    DynamoHandler.serialized = serialized  # type: ignore[method-assign]


def _patch_update_parser() -> None:
    from moto.dynamodb.parsing import validators
    from moto.dynamodb.parsing.expressions import UpdateExpressionParser  # type: ignore[attr-defined]

    original = UpdateExpressionParser.make
    parsed: dict[str, Any] = {}  # text -> its tree, shared: no caller changes it (the validator works on a copy)
    pickled: dict[int, tuple[Any, bytes]] = {}  # id of a shared tree -> (the tree, pickled) for the validator's copy
    guard = threading.Lock()

    @functools.wraps(original)
    def make(expression_str: str) -> Any:
        tree = parsed.get(expression_str)
        if tree is None:
            tree = original(expression_str)  # a malformed expression raises here, and is not kept
            with guard:
                if len(parsed) >= PARSED_LIMIT:
                    parsed.clear()
                    pickled.clear()
                pickled[id(tree)] = (tree, pickle.dumps(tree, protocol=pickle.HIGHEST_PROTOCOL))
                parsed[expression_str] = tree
        return tree

    def copy_of(value: Any, memo: Any = None) -> Any:
        """The validator's copy of the tree it rewrites: unpickled for a shared tree, moto's deepcopy otherwise."""
        kept = pickled.get(id(value))  # the entry holds the tree: its id cannot be another object's meanwhile
        if kept is not None and kept[0] is value:
            return pickle.loads(kept[1])  # noqa: S301 - bytes this process pickled itself
        return copy.deepcopy(value, memo)

    UpdateExpressionParser.make = staticmethod(make)  # type: ignore[method-assign,assignment]
    validators.deepcopy = copy_of  # type: ignore[attr-defined,assignment]


def _patch_method_lookup() -> None:
    """moto lists a handler class's methods (``inspect.getmembers``: every attribute of the class and its bases) on
    every request to find the action's; a class's methods do not change while the server runs."""
    from moto.core import responses

    responses.method_names_from_class = functools.cache(responses.method_names_from_class)  # type: ignore[attr-defined]


def patch_fast_paths() -> None:
    """Install the three (called once per process by :func:`infra.local.moto_patches.patch_moto`)."""
    _patch_answers()
    _patch_update_parser()
    _patch_method_lookup()
