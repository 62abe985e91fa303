"""Versioned catalog schemas: each catalog keeps an ordered list of steps, applied forward.

Version N is the schema after the first N steps of its catalog. Opening a
catalog runs the steps it is missing in one transaction, under a lock, so two
processes starting at once upgrade it once; `mediagate db upgrade` does the
same on its own. A released step is never edited: a change is a new step.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

# One step: the statements that take the schema from one version to the next.
Step = Sequence[str]


@dataclass(frozen=True)
class SchemaUpgrade:
    """What opening a catalog did to its schema."""

    before: int
    after: int

    def describe(self) -> str:
        if self.before == self.after:
            return f"catalog schema is at version {self.after}, nothing to do"
        return f"catalog schema upgraded from version {self.before} to {self.after}"


class SchemaTooNew(Exception):
    """The catalog was upgraded by a newer mediagate than this one."""

    def __init__(self, found: int, known: int) -> None:
        super().__init__(
            f"the catalog's schema is at version {found}, but this mediagate knows versions "
            f"up to {known}: run a mediagate at least as new as the one that upgraded it"
        )


def missing_steps(current: int, steps: Sequence[Step]) -> list[tuple[int, Step]]:
    """The steps after `current`, each with the version it leads to."""
    if current > len(steps):
        raise SchemaTooNew(current, len(steps))
    return [(version, steps[version - 1]) for version in range(current + 1, len(steps) + 1)]
