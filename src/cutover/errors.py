"""Errors cutover raises: each names what is wrong and how to fix it, in one sentence."""

from __future__ import annotations


class CutoverError(Exception):
    """Base class of every error cutover raises on purpose."""


class InvalidInput(CutoverError, ValueError):
    """A value a user gave (argument, flag, URL, file) is wrong; the message says how to fix it."""


class UnknownMigration(CutoverError, LookupError):
    """The named migration has no stored state and no recorded telemetry."""

    def __init__(self, name: str) -> None:
        super().__init__(
            f"no migration named {name!r} in the store; check the name with `cutover status`"
            " or create it with `cutover set`"
        )
        self.name = name


class ConflictError(CutoverError):
    """A compare-and-set lost: the state (or rollout) changed since the caller read it."""

    def __init__(
        self,
        name: str,
        expected: int,
        current: int,
        updated_by: str | None = None,
        *,
        what: str = "state",
    ) -> None:
        who = f" (written by {updated_by})" if updated_by else ""
        subject = f"migration {name!r}" if what == "state" else f"the {what} of {name!r}"
        super().__init__(
            f"{subject} is at version {current}{who}, not {expected};"
            f" read the current {what} and retry"
        )
        self.what = what
        self.name = name
        self.expected = expected
        self.current = current
        self.updated_by = updated_by


class LeaseLost(CutoverError):
    """A write fenced by a lease term was refused, and nothing was written: the term is over
    (its lease expired or was released, or another holder took it), so the writer must stop
    acting and stand by."""

    def __init__(self, role: str, term: int, why: str) -> None:
        super().__init__(
            f"the {role} lease of term {term} is over ({why}), so the write was refused;"
            " this process stands by until it takes the lease again"
        )
        self.role = role
        self.term = term


class StoreError(CutoverError):
    """The store could not be reached (``transient``: try again later) or refused an
    operation outright (not transient: retrying the same thing fails the same way)."""

    def __init__(self, message: str, *, transient: bool = True) -> None:
        super().__init__(message)
        self.transient = transient


class ArmTimeout(CutoverError, TimeoutError):
    """The serving arm did not answer within the migration's timeout and no fallback applied."""


class NotYet(InvalidInput):
    """An action the plan allows only later (a retry inside its cooldown): ``possible_at``
    is when, in Unix seconds."""

    def __init__(self, message: str, possible_at: float) -> None:
        super().__init__(message)
        self.possible_at = possible_at
