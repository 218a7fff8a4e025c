"""The errors a job reports to its user: a bad spec or bad data, each naming where.

Both are ValueErrors so that callers which only care that the input was wrong can catch
one type; the CLI and the service show `str(e)` as is.
"""

from __future__ import annotations


class SpecError(ValueError):
    """A job spec that cannot run; `path` is the JSON path of the offending value."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason

    def __reduce__(self) -> tuple[type[SpecError], tuple[str, str]]:
        # Celery and worker processes pickle exceptions; the default would pass only str(e)
        return (type(self), (self.path, self.reason))


class DataError(ValueError):
    """A data set that cannot be used; `source` names the file (or builtin) it came from."""

    def __init__(self, source: str, reason: str) -> None:
        super().__init__(f"{source}: {reason}")
        self.source = source
        self.reason = reason

    def __reduce__(self) -> tuple[type[DataError], tuple[str, str]]:
        return (type(self), (self.source, self.reason))
