"""Settings for one grading run, fixed before any check starts."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

if TYPE_CHECKING:  # pragma: no cover
    from grader.course import Course


#: devices a machine may have besides "meta" (which every one has)
OPTIONAL_DEVICES = ("cuda",)


@dataclass(frozen=True)
class RunConfig:
    #: text file to train on instead of the generated Markov corpus (book preprocessing applies)
    corpus_path: Optional[Path] = None
    #: folder for report.html and results.json; None writes nothing
    out_dir: Optional[Path] = None
    #: also run checks marked hidden (instructors)
    hidden: bool = False
    #: seconds any one check may run; None uses each check's own limit (10-40 s)
    check_timeout: Optional[float] = None
    #: print per-check lines to the terminal
    verbose: bool = False
    #: colour in terminal output
    color: bool = False
    #: ``-q``: no progress line, and the terminal summary leaves out the notes (the files keep them)
    quiet: bool = False
    #: devices the device checks run on besides "meta" (e.g. "cuda" when available)
    extra_devices: tuple[str, ...] = field(default_factory=tuple)
    #: the course's secret seed: every generated input is derived from it (see grader.secret)
    secret: Optional[str] = field(default=None, repr=False)
    #: "auto": sandbox where it works, else process limits with a notice; "require": the grade counts,
    #: so never run student code unisolated; "allow-open": it counts, but may run unisolated (said in the report)
    isolation: str = "auto"
    #: the course configuration (points, visibility, thresholds, limits); None: the grader's defaults
    course: Optional["Course"] = None
    #: bytes of memory (address space) a check's process may use; None: the grader's default
    memory_limit: Optional[int] = None
    #: write a JUnit XML report here (``--junit``)
    junit_path: Optional[Path] = None
    #: folders of check modules loaded as plugins (``--plugins``, an instructor's pack)
    plugin_dirs: tuple[Path, ...] = ()
    #: grade only these exercises (``check("rnn")`` in a notebook); empty: every exercise planned
    only_exercises: tuple[str, ...] = ()

    def setting(self, check_id: str, key: str, default: Any) -> Any:
        """A check's tunable value (a threshold, a training budget): the course's, else ``default``.

        Check modules build their checks with it and declare what they read in ``Check.settings``,
        so that a configuration naming a setting no check has is an error.
        """
        if self.course is None:
            return default
        return self.course.setting(check_id, key, default)

    @property
    def run_memory_limit(self) -> Optional[int]:
        """Bytes of memory a check's process may use: this run's, else the course's; None: the default."""
        if self.memory_limit is not None:
            return self.memory_limit
        return self.course.memory_limit if self.course is not None else None

    @property
    def missing_devices(self) -> tuple[str, ...]:
        """Devices some machines grade on and this one lacks: their checks are reported as skipped here."""
        return tuple(d for d in OPTIONAL_DEVICES if d not in self.extra_devices)

    @property
    def devices(self) -> tuple[str, ...]:
        """Devices the device checks run on: always 'meta' (shapes without data), then the extra ones."""
        return ("meta", *self.extra_devices)
