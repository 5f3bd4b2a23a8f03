"""Domain errors, mapped to HTTP problem documents at the edge (``routes/problems.py``).

No error message may carry a submitted value: messages name the field and the rule only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar


class RelaisError(Exception):
    """Base of every error Relais raises on purpose."""


@dataclass(frozen=True)
class FieldError:
    """One problem with one field; ``field`` is a dotted path such as ``patient.nir``."""

    field: str
    message: str


#: At most this many field errors are reported in one answer; ``truncated`` says more were found. A body can
#: break thousands of rules (16 KiB of bad list entries or unknown fields): listing them all would cost CPU to
#: collect and a document many times the request's size to send, and helps no one fix the first ones.
MAX_REPORTED_ERRORS = 20


@dataclass
class ValidationError(RelaisError):
    """The submission breaks one or more contract rules (HTTP 400).

    ``errors`` keeps the first :data:`MAX_REPORTED_ERRORS`; ``truncated`` is true when more were found.
    """

    errors: list[FieldError] = field(default_factory=list)
    truncated: bool = False

    def __post_init__(self) -> None:
        if len(self.errors) > MAX_REPORTED_ERRORS:
            self.errors = self.errors[:MAX_REPORTED_ERRORS]
            self.truncated = True

    def __str__(self) -> str:
        return "; ".join(f"{e.field}: {e.message}" for e in self.errors)


class AuthenticationError(RelaisError):
    """The request's signature could not be verified (HTTP 401); the reason is audited, and told to the client on
    the stages that explain signature failures only (``services/authn.py``, ``public_reason``). ``component`` names
    the covered component that is missing, when that is the reason."""

    def __init__(self, reason: str, key_id: str | None = None, component: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.key_id = key_id
        self.component = component


class NotFoundError(RelaisError):
    """Unknown, or not the caller's (HTTP 404, identical in both cases)."""


class ConflictError(RelaisError):
    """The request conflicts with what is stored (HTTP 409). Each kind says which conflict in ``detail``: the fixed
    sentence its 409 carries (``routes/problems.py``), the class's and never the instance's, so that it can hold no
    submitted value. Every kind that reaches a client has a sentence of its own (``docs/openapi.yaml`` lists them)."""

    detail: ClassVar[str] = "the request conflicts with what is stored"


class PayloadTooLargeError(RelaisError):
    """Body over the size limit (HTTP 413)."""


class UnsupportedMediaTypeError(RelaisError):
    """Body is not ``application/json`` (HTTP 415)."""


class RateLimitedError(RelaisError):
    """A quota or rate limit is reached (HTTP 429). ``detail``, when given, is a fixed sentence for the caller
    saying which limit (never a value)."""

    def __init__(self, message: str, retry_after: int, detail: str | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.detail = detail


class DependencyUnavailableError(RelaisError):
    """KMS, DynamoDB or another dependency failed; nothing was accepted (HTTP 503)."""

    def __init__(self, dependency: str, retry_after: int = 5) -> None:
        super().__init__(f"{dependency} unavailable")
        self.dependency = dependency
        self.retry_after = retry_after


class SendNotRecordedError(DependencyUnavailableError):
    """A patient's message went out and its record (claim, audit event, ``patient_sent_at``) could not be written:
    the notifier keeps its lease until it runs out, so that the message still reads as on its way."""


class NoSendSlotError(DependencyUnavailableError):
    """The account's sending rate or monthly budget leaves no room for a message now: it waits in its queue (the
    queue is the buffer), and is tried again after the queue's whole visibility timeout."""


class DecryptionError(RelaisError):
    """A ciphertext failed to decrypt or was bound to another record."""


class DuplicateReferenceError(ConflictError):
    """The pharmacy already submitted a result under this ``pharmacy_reference`` (the store's refusal: the service
    then tells an identical body, 200, from another, :class:`PharmacyReferenceConflictError`)."""

    detail: ClassVar[str] = "this pharmacy_reference was already used"


class PharmacyReferenceConflictError(ConflictError):
    """The ``pharmacy_reference`` was already used by this pharmacy for a different body (HTTP 409)."""

    detail: ClassVar[str] = "this pharmacy_reference was already used for a different result"
