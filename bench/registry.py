"""Name -> entry registries filled by decorators, as in timm and torchvision.

The CLI lists choices from these registries; there is no second hard-coded list anywhere.
"""

from __future__ import annotations

import difflib
import fnmatch
from typing import Callable, Generic, Iterator, TypeVar

from bench.errors import UsageError

T = TypeVar("T")


class Registry(Generic[T]):
    """A dict of named entries with wildcard listing and helpful unknown-name errors."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}

    def add(self, name: str, entry: T) -> T:
        if name in self._entries:
            raise ValueError(f"{self.kind} {name!r} is registered twice")
        self._entries[name] = entry
        return entry

    def decorator(self, name: str, wrap: Callable[[object], T]) -> Callable[[object], object]:
        """Return a decorator that registers `wrap(obj)` under `name` and gives `obj` back."""

        def register(obj: object) -> object:
            self.add(name, wrap(obj))
            return obj

        return register

    def get(self, name: str) -> T:
        try:
            return self._entries[name]
        except KeyError:
            raise UsageError(self.unknown_message(name)) from None

    def unknown_message(self, name: str) -> str:
        close = difflib.get_close_matches(name, self.names(), n=3, cutoff=0.5)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        return f"unknown {self.kind} {name!r}{hint}; choose one of: {', '.join(self.names())}"

    def names(self, pattern: str = "*") -> list[str]:
        return sorted(n for n in self._entries if fnmatch.fnmatchcase(n, pattern))

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())
