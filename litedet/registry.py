"""One small registry type for the project's three registries (model builders,
postprocess kinds, family adapters). Stdlib only, so every layer may use it."""

from __future__ import annotations

from typing import Generic, Iterator, TypeVar

__all__ = ["Registry"]

T = TypeVar("T")


class Registry(Generic[T]):
    """Names -> items; a duplicate name is refused, an unknown one names the known ones."""

    def __init__(self, what: str, error: type[KeyError] = KeyError) -> None:
        self.what, self.error = what, error
        self._items: dict[str, T] = {}

    def add(self, name: str, item: T) -> T:
        if name in self._items:
            raise ValueError(f"{self.what} {name!r} is already registered")
        self._items[name] = item
        return item

    def remove(self, name: str) -> None:
        """Drop a registration (tests that register a throw-away family clean up with it)."""
        self._items.pop(name, None)

    def get(self, name: str) -> T:
        try:
            return self._items[name]
        except (KeyError, TypeError):
            raise self.error(f"unknown {self.what} {name!r}; known: {', '.join(self.names())}") from None

    def names(self) -> list[str]:
        return sorted(self._items)

    def __iter__(self) -> Iterator[T]:
        return iter(list(self._items.values()))
