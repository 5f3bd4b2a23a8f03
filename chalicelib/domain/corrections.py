"""Corrections and withdrawals of an accepted result (``POST /v1/results/{id}/correction``, contract v2 §8).

Pure rules: what a correction asks for (:class:`CorrectionRequest`, parsed by
:func:`chalicelib.domain.validation.parse_correction` with the submission's rules), how it makes the next version of
a submission (:meth:`CorrectionRequest.apply`), until when a result may be corrected (:func:`check_window`), and what a
``correction_reference`` used again means (:func:`earlier_use`).

Choices where the contract is silent:

* ``result`` and ``test`` together are refused (400): ``test`` is the whole test object, result included, so the
  two could disagree.
* A corrected ``test.sampled_at`` may be as old as the correction window (30 days), not the submission's 7 days:
  otherwise a test could not be corrected after its first week, which the window allows.
* The window runs from the ``sampled_at`` of the version being corrected; a withdrawn result takes no further
  correction (409): there is nothing left to correct.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import ClassVar, Final, Literal

from chalicelib.domain.model import Patient, Submission, TestInfo, TestResult
from chalicelib.domain.records import Correction
from chalicelib.errors import ConflictError, RelaisError

Reason = Literal["wrong_result", "wrong_patient", "wrong_test", "entered_in_error"]
#: The reason that withdraws the result: it carries no other field.
WITHDRAWAL: Final = "entered_in_error"
#: A result may be corrected until this long after its ``test.sampled_at``.
CORRECTION_WINDOW: Final = timedelta(days=30)


class CorrectionWindowClosedError(ConflictError):
    """The result's correction window (30 days after ``sampled_at``) has closed (HTTP 409)."""

    detail: ClassVar[str] = (
        "this result can no longer be corrected: its correction window (30 days after test.sampled_at) has closed"
    )


class ResultWithdrawnError(ConflictError):
    """The result was withdrawn (recorded in error): it takes no further correction or message (HTTP 409)."""

    detail: ClassVar[str] = (
        "this result was withdrawn (entered_in_error): it takes no further correction, resend or slip"
    )


class CorrectionReferenceConflictError(ConflictError):
    """The ``correction_reference`` was already used on this result for another correction (HTTP 409)."""

    detail: ClassVar[str] = "this correction_reference was already used on this result for a different correction"


class VersionSupersededError(RelaisError):
    """A correction made a later version while an earlier one was being delivered: that one is now due instead."""


@dataclass(frozen=True)
class CorrectionRequest:
    """One validated correction body: a withdrawal, or at least one of ``result``, ``patient``, ``test``."""

    reference: str
    reason: Reason
    result: TestResult | None = None
    patient: Patient | None = None
    test: TestInfo | None = None

    @property
    def withdraws(self) -> bool:
        return self.reason == WITHDRAWAL

    def apply(self, submission: Submission) -> Submission:
        """The next version of ``submission``: the objects given replace the previous ones whole (a withdrawal
        keeps the submission as it was: the national system is told it was entered in error)."""
        test = self.test or submission.test
        if self.result is not None:
            test = replace(test, result=self.result)
        return replace(submission, patient=self.patient or submission.patient, test=test)


@dataclass(frozen=True)
class NextVersion:
    """What a committed correction changes on its result (``adapters/corrections.py`` writes it)."""

    ciphertext: bytes  # the new version's, sealed for (result, pharmacy, version)
    correction: Correction
    withdrawn: bool
    patient_status: str  # "pending" when a message is due
    previous_generation: int  # the link generation read before (the commit moves it on by one)
    unbill: bool  # withdrawn on the UTC day it was received: out of the month's usage
    #: decided on "no message has gone out" (a withdrawal then tells nobody): the commit requires that it still holds
    nothing_sent: bool = False


def check_window(sampled_at: datetime, now: datetime) -> None:
    """CorrectionWindowClosedError once ``CORRECTION_WINDOW`` has passed since ``sampled_at``."""
    if now - sampled_at > CORRECTION_WINDOW:
        raise CorrectionWindowClosedError("the correction window of this result has closed")


def earlier_use(corrections: tuple[Correction, ...], reference: str) -> Correction | None:
    """The correction already made under ``reference`` on this result, if any (references are unique per result)."""
    return next((correction for correction in corrections if correction.reference == reference), None)
