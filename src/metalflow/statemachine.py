"""Transition tables as data: one small helper shared by machine lifecycle and workflows.

Following h11's `_state.py`: every legal move is a dict entry, an illegal one raises an error
naming the state and the event, and nothing changes.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import Generic, TypeVar

S = TypeVar("S", bound=StrEnum)
E = TypeVar("E", bound=StrEnum)


class IllegalTransition(ValueError):
    def __init__(self, what: str, state: str, event: str, allowed: list[str]) -> None:
        self.state = state
        self.event = event
        hint = f"; allowed from {state}: {', '.join(allowed)}" if allowed else ""
        super().__init__(f"{what} in state {state} cannot {event}{hint}")


class TransitionTable(Generic[S, E]):
    def __init__(self, what: str, table: Mapping[S, Mapping[E, S]]) -> None:
        self.what = what
        self.table = table

    def next(self, state: S, event: E) -> S:
        moves = self.table.get(state, {})
        if event not in moves:
            raise IllegalTransition(self.what, state.value, event.value, [e.value for e in moves])
        return moves[event]

    def can(self, state: S, event: E) -> bool:
        return event in self.table.get(state, {})
