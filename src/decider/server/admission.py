"""How many decisions one process works on at once. Past the limit a request is answered 503
at once, with Retry-After, so the caller shows its default content now; queueing it would
make every decision behind it miss its profile budget and fall back anyway, silently."""

from __future__ import annotations

from litestar.exceptions import HTTPException


class Overloaded(HTTPException):
    status_code = 503


class Admission:
    """Counts decisions in flight and those turned away; one per process, on its loop."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.in_flight = 0
        self.shed = 0

    def __enter__(self) -> Admission:
        if self.in_flight >= self.limit:
            self.shed += 1
            raise Overloaded(
                f"{self.in_flight} decision{'s' if self.in_flight != 1 else ''} in flight, "
                "the most this process takes "
                "(DECIDER_MAX_IN_FLIGHT); retry, or show the default content",
                headers={"Retry-After": "1"},
            )
        self.in_flight += 1
        return self

    def __exit__(self, *_: object) -> None:
        self.in_flight -= 1
