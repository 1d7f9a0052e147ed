"""Why an owner refused a command outright (nothing changed).

A business "no" that the rest of the flow should react to is an event
(`RefundRejected`). These errors are for commands that make no sense at all:
malformed, addressed to something that does not exist, or sent by someone who
may not send them. The activity layer turns them into non-retryable failures.
"""


class DomainError(Exception):
    """Base class: a command was refused and no state changed."""

    kind = "DomainError"

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class InvalidCommand(DomainError):
    kind = "InvalidCommand"


class NotAuthorized(DomainError):
    kind = "NotAuthorized"


class NotFound(DomainError):
    kind = "NotFound"


def refusal_kinds() -> list[str]:
    """Every kind of outright refusal an owner raises (each DomainError subclass): retrying
    a refused command cannot help, so workflows never retry these (workflows/process.py)."""
    found, waiting = set(), list(DomainError.__subclasses__())
    while waiting:
        refusal = waiting.pop()
        found.add(refusal.kind)
        waiting.extend(refusal.__subclasses__())
    return sorted(found)


class ConcurrencyConflict(Exception):
    """Someone else saved the aggregate first; reload and decide again."""
