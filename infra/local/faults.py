"""The faults the local AWS injects, as AWS has them: which are on, at what rate, from which seed.

Set from the environment of the process that runs moto (the local stack's moto server, or the test process for the
in-process moto of the integration tests); :func:`infra.local.moto_patches.patch_moto` reads it once, and
:func:`injected` changes it for a block of a test. See ``infra/local/README.md`` for what each fault does.

==================================== ===================================================================== =======
variable                             meaning                                                               default
==================================== ===================================================================== =======
``RELAIS_LOCAL_FAULTS``              ``on``: the random faults below at their rates; ``off``: none         ``off``
``RELAIS_LOCAL_FAULTS_SEED``         the seed of every random fault (an integer); unset: a fresh one,      random
                                     printed at start so that a failing run can be replayed with it
``RELAIS_LOCAL_DUPLICATE_RATE``      share of messages received from a standard queue that are delivered   0.05
                                     once more, later (same MessageId and body, a new receipt handle)
``RELAIS_LOCAL_REORDER_RATE``        share of messages sent to a standard queue held back for a while, so  0.05
                                     that later ones overtake them
``RELAIS_LOCAL_REDELIVERY_SECONDS``  the longest a duplicate or a held-back message waits (uniform)         5
``RELAIS_LOCAL_THROTTLE_RATE``       share of DynamoDB, KMS, SNS, SES and SQS data calls throttled with    0.02
                                     the service's own throttling error
``RELAIS_LOCAL_TRANSACTION_CONFLICTS`` ``on``: a write to an item held by a transaction in flight fails,   ``on``
                                     as DynamoDB fails it (not random; independent of the switch above)
==================================== ===================================================================== =======

A rate set to ``0`` turns that fault off alone. Each fault draws from its own stream, seeded by the seed and the
stream's name (say ``throttle:dynamodb:PutItem`` or ``duplicate:relais-local-national``): replaying a seed gives the
n-th call of an operation the same fate, whatever the other operations do. Concurrent calls of one operation may
reach the stream in another order, so a replay is exact for the faults of one sequence of calls, not across threads.
"""

from __future__ import annotations

import contextlib
import random
import secrets
import sys
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from typing import Final

SWITCH: Final = "RELAIS_LOCAL_FAULTS"
SEED: Final = "RELAIS_LOCAL_FAULTS_SEED"
DUPLICATE_RATE: Final = "RELAIS_LOCAL_DUPLICATE_RATE"
REORDER_RATE: Final = "RELAIS_LOCAL_REORDER_RATE"
REDELIVERY_SECONDS: Final = "RELAIS_LOCAL_REDELIVERY_SECONDS"
THROTTLE_RATE: Final = "RELAIS_LOCAL_THROTTLE_RATE"
TRANSACTION_CONFLICTS: Final = "RELAIS_LOCAL_TRANSACTION_CONFLICTS"

#: The rates of the random faults when ``RELAIS_LOCAL_FAULTS=on`` does not name them.
DEFAULT_RATES: Final = {DUPLICATE_RATE: 0.05, REORDER_RATE: 0.05, THROTTLE_RATE: 0.02}
DEFAULT_REDELIVERY_SECONDS: Final = 5.0
#: DynamoDB always refuses such writes; ``off`` only to tell a conflict from another failure while debugging.
DEFAULT_TRANSACTION_CONFLICTS: Final = True

_ON: Final = ("1", "on", "true", "yes")
_OFF: Final = ("0", "off", "false", "no", "")


class FaultSettingError(ValueError):
    """A ``RELAIS_LOCAL_*`` fault variable has a value that means nothing; the message names it."""


@dataclass(frozen=True)
class Faults:
    """What the local AWS does wrong on purpose. The default value is a gentle AWS: no fault at all."""

    seed: int = 0
    duplicate_rate: float = 0.0
    reorder_rate: float = 0.0
    redelivery_seconds: float = DEFAULT_REDELIVERY_SECONDS
    throttle_rate: float = 0.0
    transaction_conflicts: bool = DEFAULT_TRANSACTION_CONFLICTS

    @property
    def random_faults(self) -> bool:
        """Whether any random fault can happen (those the seed decides)."""
        return max(self.duplicate_rate, self.reorder_rate, self.throttle_rate) > 0

    def describe(self) -> str:
        """One line for the console: what is on, and how to replay it."""
        conflicts = "on" if self.transaction_conflicts else "off"
        if not self.random_faults:
            return f"local AWS faults: off (transaction conflicts {conflicts})"
        return (
            f"local AWS faults: seed {self.seed}, duplicates {self.duplicate_rate:g}, "
            f"reordering {self.reorder_rate:g}, throttling {self.throttle_rate:g}, redelivery within "
            f"{self.redelivery_seconds:g} s, transaction conflicts {conflicts}; "
            f"replay with {SEED}={self.seed}"
        )

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Faults:
        """The faults ``env`` asks for (see the module); FaultSettingError names a variable that makes no sense."""
        on = _flag(env, SWITCH, default=False)
        conflicts = _flag(env, TRANSACTION_CONFLICTS, default=DEFAULT_TRANSACTION_CONFLICTS)
        if not on:
            return cls(transaction_conflicts=conflicts)
        raw_seed = env.get(SEED, "").strip()
        try:
            seed = int(raw_seed) if raw_seed else secrets.randbelow(2**32)
        except ValueError:
            raise FaultSettingError(f"{SEED} must be an integer") from None
        return cls(
            seed=seed,
            duplicate_rate=_rate(env, DUPLICATE_RATE),
            reorder_rate=_rate(env, REORDER_RATE),
            redelivery_seconds=_number(env, REDELIVERY_SECONDS, DEFAULT_REDELIVERY_SECONDS),
            throttle_rate=_rate(env, THROTTLE_RATE),
            transaction_conflicts=conflicts,
        )


def _flag(env: Mapping[str, str], name: str, *, default: bool) -> bool:
    raw = env.get(name)
    if raw is None:
        return default
    value = raw.strip().lower()
    if value in _ON:
        return True
    if value in _OFF:
        return False
    raise FaultSettingError(f"{name} must be on or off")


def _number(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name, "").strip()
    try:
        value = float(raw) if raw else default
    except ValueError:
        raise FaultSettingError(f"{name} must be a number") from None
    if not value >= 0:
        raise FaultSettingError(f"{name} must be 0 or more")
    return value


def _rate(env: Mapping[str, str], name: str) -> float:
    value = _number(env, name, DEFAULT_RATES[name])
    if value > 1:
        raise FaultSettingError(f"{name} must be between 0 and 1")
    return value


_lock = threading.Lock()
_current = Faults()
_streams: dict[str, random.Random] = {}


def current() -> Faults:
    """The faults in force in this process."""
    return _current


def install(faults: Faults) -> Faults:
    """Put ``faults`` in force in this process (every stream starts again from the seed); the previous ones."""
    global _current
    with _lock:
        previous, _current = _current, faults
        _streams.clear()
    return previous


def install_from_env(env: Mapping[str, str]) -> Faults:
    """Put the faults ``env`` asks for in force, and say so on stderr when any is on (with the seed to replay)."""
    faults = Faults.from_env(env)
    install(faults)
    if faults.random_faults or faults.transaction_conflicts:
        print(faults.describe(), file=sys.stderr, flush=True)
    return faults


def stream(name: str) -> random.Random:
    """The seeded generator of one kind of fault (created on first use from the seed and ``name``)."""
    with _lock:
        generator = _streams.get(name)
        if generator is None:
            generator = _streams[name] = random.Random(f"{_current.seed}/{name}")  # noqa: S311 - not security
        return generator


def happens(name: str, rate: float) -> bool:
    """Whether the next draw of stream ``name`` falls under ``rate`` (no draw at all when the rate is 0)."""
    if rate <= 0:
        return False
    generator = stream(name)
    with _lock:
        return generator.random() < rate


def uniform(name: str, high: float) -> float:
    """A draw in [0, ``high``] from stream ``name``."""
    generator = stream(name)
    with _lock:
        return generator.uniform(0, high)


def choice(name: str, count: int) -> int:
    """A draw in [0, ``count``) from stream ``name``."""
    generator = stream(name)
    with _lock:
        return generator.randrange(count)


@contextlib.contextmanager
def injected(**changes: float | bool | int) -> Iterator[Faults]:
    """The current faults with ``changes`` (fields of :class:`Faults`) in force for the block, for tests::

    with faults.injected(seed=7, throttle_rate=1.0): ...
    """
    faults = replace(_current, **changes)  # type: ignore[arg-type]
    previous = install(faults)
    try:
        yield faults
    finally:
        install(previous)


def environment(
    seed: int | None = None, *, transaction_conflicts: bool | None = None, **rates: float
) -> dict[str, str]:
    """The environment that turns the random faults on in a process started with it (the local stack, its moto
    server, the e2e tier): the default rates unless ``rates`` (``duplicate_rate=0.1``...) says otherwise, and a
    fresh seed unless ``seed`` is given. Pass it on top of the rest of the environment."""
    names = {"duplicate_rate": DUPLICATE_RATE, "reorder_rate": REORDER_RATE, "throttle_rate": THROTTLE_RATE}
    env = {SWITCH: "on", SEED: str(secrets.randbelow(2**32) if seed is None else seed)}
    for name, value in rates.items():
        if name == "redelivery_seconds":
            env[REDELIVERY_SECONDS] = str(value)
        elif name in names:
            env[names[name]] = str(value)
        else:
            raise TypeError(f"unknown fault rate {name!r}")
    if transaction_conflicts is not None:
        env[TRANSACTION_CONFLICTS] = "on" if transaction_conflicts else "off"
    return env
