"""How many decisions one process works on at once. Past the limit a request is answered 503
at once, with Retry-After, so the caller shows its default content now; queueing it would
make every decision behind it miss its profile budget and fall back anyway, silently.

A batch of decisions (POST /v1/decide/batch) holds one place among the decisions in flight
while it runs, and one of the few places for batches (a 32nd of the limit, at least one):
however many batches come, most places stay free for single decisions, and a batch past
its own limit is turned away as a decision past the limit is. (A batch's decisions are made
in slices, the event loop serving single decisions between them: decider.service.)"""

from __future__ import annotations

from types import TracebackType

from litestar.exceptions import HTTPException

BATCH_SHARE = 32  # the limit's share that batches may hold


class Overloaded(HTTPException):
    status_code = 503


class Admission:
    """Counts decisions in flight and those turned away; one per process, on its loop."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.batch_limit = max(1, limit // BATCH_SHARE)
        self.in_flight = 0
        self.batches = 0
        self.shed = 0

    def __enter__(self) -> Admission:
        if self.in_flight >= self.limit:
            held = self.in_flight
            self.refuse(f"{held} decision{'s' if held != 1 else ''}", "DECIDER_MAX_IN_FLIGHT")
        self.in_flight += 1
        return self

    def __exit__(self, *_: object) -> None:
        self.in_flight -= 1

    def batch(self) -> _Batch:
        """`with admission.batch():` holds a batch's places while it runs."""
        return _Batch(self)

    def refuse(self, held: str, limit: str) -> None:
        """Turn a request away: `held` in flight already, the most `limit` lets in."""
        self.shed += 1
        raise Overloaded(
            f"{held} in flight, the most this process takes ({limit}); retry, or show the "
            "default content",
            headers={"Retry-After": "1"},
        )


class _Batch:
    __slots__ = ("_admission",)

    def __init__(self, admission: Admission) -> None:
        self._admission = admission

    def __enter__(self) -> None:
        admission = self._admission
        held = admission.batches
        if held >= admission.batch_limit:
            batches = f"{held} batch{'es' if held != 1 else ''}"
            admission.refuse(batches, f"DECIDER_MAX_IN_FLIGHT / {BATCH_SHARE}")
        admission.__enter__()
        admission.batches += 1

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self._admission.batches -= 1
        self._admission.__exit__()
