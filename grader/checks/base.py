"""What a check is: a probe that runs in the runner and a judge that decides.

``probe(ctx, **params)`` runs in the runner, calls ONE student hook (the
reference supplies everything else) and returns plain data. ``judge(observed,
**params)`` runs in the grading process, recomputes what the reference would
have produced on the same seeded inputs and returns a :class:`Verdict`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from grader.results import Verdict


@dataclass(frozen=True)
class Exercise:
    name: str
    title: str
    hooks: tuple[str, ...]
    #: one line shown above the exercise's checks
    summary: str = ""


@dataclass(frozen=True)
class Check:
    exercise: str
    name: str
    title: str
    #: the student hook this check grades; the reference supplies every other one
    hook: str
    points: float
    probe: Callable[..., Any]
    judge: Callable[..., Verdict]
    params: dict[str, Any] = field(default_factory=dict)
    hidden: bool = False
    #: seconds the check may run; correct code needs well under a tenth of it
    timeout: float = 10.0
    #: why it matters, for the report (one sentence)
    explains: str = ""

    @property
    def id(self) -> str:
        return f"{self.exercise}.{self.name}"

    @property
    def probe_path(self) -> str:
        return f"{self.probe.__module__}:{self.probe.__name__}"

    def request(self, files: dict[str, str], limits: dict) -> dict[str, Any]:
        return {
            "files": files,
            "probe": self.probe_path,
            "hook": self.hook,
            "params": self.params,
            "timeout": self.timeout,
            "limits": limits,
            "preload": [self.probe.__module__],
        }
