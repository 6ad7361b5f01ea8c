"""One registry per kind of thing a spec names by kind (target kinds, step kinds): built once from an explicit
list, so a duplicate fails at import and an unknown name fails loudly with the names that exist."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Generic, Protocol, TypeVar


class Named(Protocol):
    @property
    def name(self) -> str:  # the kind's name in a spec: `argocd`, `setWeight`
        ...


K = TypeVar("K", bound=Named)


class KindRegistry(Generic[K]):
    def __init__(self, what: str, kinds: Iterable[K]) -> None:
        self.what = what
        self._kinds: dict[str, K] = {}
        for kind in kinds:
            if kind.name in self._kinds:
                raise ValueError(f"{what} kind {kind.name!r} registered twice")
            self._kinds[kind.name] = kind

    def __getitem__(self, name: str) -> K:
        try:
            return self._kinds[name]
        except KeyError:
            raise KeyError(f"no {self.what} kind {name!r}; known: {sorted(self._kinds)}") from None

    def __contains__(self, name: object) -> bool:
        return name in self._kinds

    def __iter__(self) -> Iterator[K]:
        return iter(self._kinds.values())

    @property
    def names(self) -> list[str]:
        return list(self._kinds)
