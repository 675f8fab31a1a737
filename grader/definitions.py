"""What plugins declare: exercises, probes (runs of student code), checks (verdicts on a run) and
misconceptions (the mistakes a failing run's data reveals).

A :class:`Probe` is one run of ONE student hook in the runner, the reference supplying
everything else: ``probe.run(ctx, **probe.params)`` calls the hook through ``ctx.student(name)``
and returns plain data. A :class:`Check` judges that data in the grading process:
``check.judge(observed, **probe.params) -> Verdict``, recomputing the reference's side from the
same seeded parameters and never trusting inputs that came back. Checks built on the same
``Probe`` object read the same run: student code runs once for all of them. A
:class:`Misconception` names the mistake behind a check that did not pass, from the same data.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from grader.hints import Hint
from grader.results import VISIBILITIES, VISIBLE, Verdict


@dataclass(frozen=True)
class Exercise:
    """One exercise of the lesson: the hooks a student implements for it."""

    name: str
    title: str
    hooks: tuple[str, ...]
    #: one line shown above the exercise's checks
    summary: str = ""


@dataclass(frozen=True, eq=False)
class Probe:
    """One run of student code. Compared by identity: checks share a run by sharing the object."""

    #: the student hook this run calls; the reference supplies every other one
    hook: str
    #: ``run(ctx, **params)``, executed in the runner; must be a module-level function
    run: Callable[..., Any]
    #: keyword arguments for ``run`` and for every judge reading this run; plain JSON data
    params: dict[str, Any] = field(default_factory=dict)
    #: seconds the run may take; correct code needs well under a tenth of it
    timeout: float = 10.0
    #: computes (and caches) the reference's side of the judges; planning calls it before grading
    reference: Optional[Callable[[], Any]] = None
    #: what the hook's common errors usually mean, added to an error's message
    hints: tuple[Hint, ...] = ()

    @property
    def path(self) -> str:
        """How the runner finds ``run``: ``"module:function"``."""
        return f"{self.run.__module__}:{self.run.__name__}"


@dataclass(frozen=True)
class Check:
    exercise: str
    name: str
    title: str
    points: float
    probe: Probe
    #: ``judge(observed, **probe.params) -> Verdict``, executed in the grading process
    judge: Callable[..., Verdict]
    #: kept from students (runs only with ``--hidden`` or in the instructor's grading); True means
    #: visibility "after_published" unless ``visibility`` says otherwise
    hidden: bool = False
    #: why it matters, for the report (one sentence)
    explains: str = ""
    #: when students see it (Gradescope's visible / hidden / after_due_date / after_published);
    #: "" derives it from ``hidden``. A course configuration may change it.
    visibility: str = ""
    #: what a course configuration may tune, with the values this check was built with
    #: (e.g. ``{"band": 0.05, "epochs": 8}``); each check module reads them with ``config.setting``
    settings: dict[str, Any] = field(default_factory=dict)
    #: the plugin that contributed it ("built-in", a pack's name), filled in by planning
    pack: str = "built-in"

    def __post_init__(self) -> None:
        visibility = self.visibility or ("after_published" if self.hidden else VISIBLE)
        if visibility not in VISIBILITIES:
            raise ValueError(f"check {self.id}: visibility {visibility!r} is not one of {', '.join(VISIBILITIES)}")
        object.__setattr__(self, "visibility", visibility)
        object.__setattr__(self, "hidden", visibility != VISIBLE)

    @property
    def id(self) -> str:
        return f"{self.exercise}.{self.name}"

    @property
    def hook(self) -> str:
        return self.probe.hook


@dataclass(frozen=True)
class Evidence:
    """What a misconception may look at: one check's run of student code, which did not pass."""

    check_id: str
    #: the plain data the probe returned (None when the student's code raised)
    observed: Any
    #: the probe's parameters: the seeded inputs, rebuilt the same way as the judge rebuilds them
    params: dict[str, Any]
    #: the check's own verdict ("failed" or "error") and message, e.g. to read an exception's text
    status: str
    message: str


@dataclass(frozen=True)
class Misconception:
    """One recognisable mistake, worded as a teaching assistant would say it.

    ``recognise(evidence) -> bool`` is called, in the grading process, only for checks of
    ``checks`` that did not pass; it should match the mistake's exact behaviour (e.g. the reference
    re-run with the mistake applied, on the same inputs) so that a match is a claim worth making.
    An exception in it counts as no match.
    """

    #: short stable name, e.g. "rnn.relu-activation"; shown in reports and results.json
    key: str
    #: check ids it may explain; ``fnmatch`` patterns, e.g. ``"rnn_scratch.rnn.*"``
    checks: tuple[str, ...]
    #: the mistake, as a clause: "the hidden state uses ReLU instead of tanh"
    mistake: str
    #: why that is wrong, one or two sentences
    why: str
    #: the one-line fix
    fix: str
    recognise: Callable[[Evidence], bool]

    def wording(self) -> str:
        """The diagnosis as students read it."""
        return f"Likely mistake: {self.mistake}. {self.why} Fix: {self.fix}"
