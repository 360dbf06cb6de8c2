"""Registries by name (RecBole-style) instead of if-else chains: metrics, evaluators, aggregations."""

from __future__ import annotations

from typing import Callable, Generic, TypeVar

T = TypeVar("T")


class Registry(dict[str, T], Generic[T]):
    """name -> implementation, filled by the ``register(name)`` decorator."""

    def __init__(self, kind: str):
        super().__init__()
        self.kind = kind

    def register(self, name: str) -> Callable[[T], T]:
        def add(implementation: T) -> T:
            if name in self:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self[name] = implementation
            return implementation
        return add
