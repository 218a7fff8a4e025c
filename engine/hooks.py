"""Removable hook handles, as `torch.utils.hooks.RemovableHandle`."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

_ids = itertools.count()


class RemovableHandle:
    """Returned by every `register_*hook`; `remove()` (or leaving a `with` block) unregisters."""

    __slots__ = ("_hooks", "id")

    def __init__(self, hooks: dict[int, Callable[..., Any]], fn: Callable[..., Any]) -> None:
        self.id = next(_ids)
        self._hooks = hooks
        hooks[self.id] = fn

    def remove(self) -> None:
        self._hooks.pop(self.id, None)

    def __enter__(self) -> RemovableHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()
