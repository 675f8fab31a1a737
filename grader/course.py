"""A course's configuration: which exercises, points, visibility, thresholds and limits.

It lives in a ``grader.toml`` (keys at the top level) or in the ``[tool.grader]`` table of a
course's ``pyproject.toml``::

    course = "Deep Learning, fall term"
    include = ["rnn_scratch", "grad_clipping"]     # the exercises graded; default: all
    fail_under = 60                                # exit 1 below it (CI)
    timeout = 30                                   # seconds per run; an exercise's or check's own wins
    memory_mb = 4096                               # memory per check's process
    corpus = "data/timemachine.txt"                # relative to this file
    visibility = "visible"                         # default for every check

    [exercises.rnn_scratch]
    points = 30                                    # the exercise's checks are scaled to sum to it
    visibility = "after_due_date"

    [checks."train_epoch.perplexity"]
    points = 6
    visibility = "hidden"
    band = 0.08                                    # a setting the check declares (grade --explain)

Reading checks the file's own shape (:func:`load_course`); names of exercises, checks and
settings are checked against the planned checks (:meth:`Course.apply`), with a suggestion.
"""

from __future__ import annotations

import difflib
import hashlib
import math
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional, Sequence

from grader.results import VISIBILITIES

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

#: the file a course configuration is looked for in, besides a pyproject.toml's [tool.grader]
CONFIG_NAME = "grader.toml"
PYPROJECT = "pyproject.toml"

#: key -> (type, description) at the top level, per exercise and per check
TOP_KEYS = {
    "course": (str, "the course's name, shown in reports"),
    "include": (list, "the exercises graded, by name"),
    "fail_under": (float, "exit 1 when the score (out of 100) is below it"),
    "timeout": (float, "seconds each check may run"),
    "memory_mb": (int, "memory (MiB of address space) each check's process may use"),
    "corpus": (str, "text file to train on, relative to the configuration"),
    "visibility": (str, "when students see the checks: " + ", ".join(VISIBILITIES)),
}
PART_KEYS = {
    "points": (float, "points"),
    "visibility": (str, "when students see it: " + ", ".join(VISIBILITIES)),
    "timeout": (float, "seconds each run may take"),
}
#: a check's settings come on top of PART_KEYS; their types are those of the values it was built with


class CourseError(ValueError):
    """The course configuration cannot be used; the message names the file, the key and the fix."""


@dataclass(frozen=True, eq=False)
class Course:
    """A validated course configuration. Equal (and hashed) by file content."""

    path: Path
    #: sha256 of the file's bytes
    digest: str
    name: str = ""
    exercises: Optional[tuple[str, ...]] = None
    fail_under: Optional[float] = None
    timeout: Optional[float] = None
    memory_mb: Optional[int] = None
    corpus: Optional[Path] = None
    visibility: Optional[str] = None
    #: exercise name -> its table; check id -> its table (points, visibility, timeout, settings)
    per_exercise: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    per_check: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    #: where in the file it came from, for messages: "grader.toml" or "pyproject.toml [tool.grader]"
    source: str = ""

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Course) and (self.digest, self.path) == (other.digest, other.path)

    def __hash__(self) -> int:
        return hash((self.digest, self.path))

    @property
    def memory_limit(self) -> Optional[int]:
        return None if self.memory_mb is None else self.memory_mb << 20

    def describe(self) -> str:
        """One line for reports: which file, which content."""
        label = f"{self.path}" + (" [tool.grader]" if self.path.name == PYPROJECT else "")
        return (f"{self.name}: " if self.name else "") + f"{label} (sha256 {self.digest[:12]})"

    def setting(self, check_id: str, key: str, default: Any) -> Any:
        """The value the course gives a check's setting, else ``default``."""
        return self.per_check.get(check_id, {}).get(key, default)

    def apply(self, checks: Sequence[Any], exercises: Sequence[Any],
              elsewhere: Sequence[Any] = ()) -> tuple[list[Any], list[Any]]:
        """The planned checks and exercises as this course grades them.

        Unknown exercise, check and setting names are errors (with the closest known name); an
        exercise left out drops its checks; points, visibility and time limits are replaced.
        ``elsewhere``: checks that exist on other machines (a device this one lacks), valid names too.
        """
        from grader.definitions import Check

        known_exercises = [ex.name for ex in exercises]
        for name in self.exercises or ():
            if name not in known_exercises:
                raise self._error(f"`include` names an unknown exercise {name!r}", name, known_exercises)
        for name in self.per_exercise:
            if name not in known_exercises:
                raise self._error(f"[exercises.{name}] names an unknown exercise", name, known_exercises)
        by_id = {c.id: c for c in checks}
        other_ids = {c.id for c in elsewhere}
        for check_id, table in self.per_check.items():
            check = by_id.get(check_id)
            if check is None and check_id in other_ids:
                continue  # checked where it runs
            if check is None:
                raise self._error(f"[checks.{_quoted(check_id)}] names an unknown check", check_id,
                                  list(by_id) + list(other_ids), "(`grade --list-checks` lists them)")
            for key, value in table.items():
                if key in PART_KEYS:
                    continue
                if key not in check.settings:
                    have = ", ".join(sorted(PART_KEYS) + sorted(check.settings))
                    raise self._error(f"[checks.{_quoted(check_id)}] has an unknown key {key!r} (it takes {have})",
                                      key, list(PART_KEYS) + list(check.settings))
                _check_type(self, f"checks.{_quoted(check_id)}.{key}", value, type(check.settings[key]))
        included = set(self.exercises) if self.exercises is not None else set(known_exercises)
        kept_exercises = [ex for ex in exercises if ex.name in included]
        probes: dict[int, Any] = {}
        result: list[Check] = []
        for check in checks:
            if check.exercise not in included:
                continue
            own, of_exercise = self.per_check.get(check.id, {}), self.per_exercise.get(check.exercise, {})
            visibility = own.get("visibility") or of_exercise.get("visibility") or self.visibility
            # the most specific time limit wins: the check's, the exercise's, the course's
            timeout = own.get("timeout", of_exercise.get("timeout", self.timeout))
            probe = check.probe
            if timeout is not None:  # checks share a run by sharing the probe: give them the same new one
                probe = probes.setdefault(id(check.probe), replace(check.probe, timeout=float(timeout)))
            result.append(replace(check, points=float(own.get("points", check.points)), probe=probe,
                                  visibility=visibility or check.visibility))
        return _scaled(result, self.per_exercise), kept_exercises

    def _error(self, what: str, name: str, known: Iterable[str], extra: str = "") -> CourseError:
        close = difflib.get_close_matches(name, list(known), n=1, cutoff=0.6)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        return CourseError(f"{self.path}: {what}{hint}" + (f" {extra}" if extra else ""))


def _scaled(checks: list[Any], per_exercise: Mapping[str, Mapping[str, Any]]) -> list[Any]:
    """Checks of an exercise with ``points`` scaled so that they sum to it (their ratios kept)."""
    totals: dict[str, float] = {}
    for check in checks:
        totals[check.exercise] = totals.get(check.exercise, 0.0) + check.points
    out = []
    for check in checks:
        wanted = per_exercise.get(check.exercise, {}).get("points")
        if wanted is not None and totals[check.exercise] > 0:
            check = replace(check, points=round(check.points * float(wanted) / totals[check.exercise], 6))
        out.append(check)
    return out


def _quoted(check_id: str) -> str:
    return f'"{check_id}"' if "." in check_id else check_id


def find_course(places: Iterable[Path]) -> Optional[Path]:
    """The first ``grader.toml``, or ``pyproject.toml`` with a [tool.grader] table, in these folders."""
    seen = set()
    for place in places:
        try:
            folder = Path(place).resolve()
        except OSError:
            continue
        if folder in seen or not folder.is_dir():
            continue
        seen.add(folder)
        if (folder / CONFIG_NAME).is_file():
            return folder / CONFIG_NAME
        pyproject = folder / PYPROJECT
        if pyproject.is_file():
            try:
                data = tomllib.loads(pyproject.read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
                continue  # not ours to complain about unless it is given with --config
            if isinstance(data.get("tool"), dict) and "grader" in data["tool"]:
                return pyproject
    return None


def load_course(path: Path) -> Course:
    """Read and check a course configuration: ``grader.toml`` or a pyproject.toml's [tool.grader]."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise CourseError(f"{path}: no such configuration file") from None
    except IsADirectoryError:
        raise CourseError(f"{path} is a folder; give its grader.toml or pyproject.toml") from None
    except OSError as exc:
        raise CourseError(f"{path}: cannot be read ({exc.strerror})") from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise CourseError(f"{path}: is not UTF-8 text; save it as UTF-8") from None
    except tomllib.TOMLDecodeError as exc:
        raise CourseError(f"{path}: is not valid TOML: {exc}") from None
    source = path.name
    if path.name == PYPROJECT or ("tool" in data and path.name != CONFIG_NAME):
        tool = data.get("tool")
        if not isinstance(tool, dict) or not isinstance(tool.get("grader"), dict):
            raise CourseError(f"{path}: has no [tool.grader] table; put the course configuration there "
                              f"or in a {CONFIG_NAME}")
        data, source = tool["grader"], f"{path.name} [tool.grader]"
    return _parse(path.resolve(), hashlib.sha256(raw).hexdigest(), data, source)


def _parse(path: Path, digest: str, data: dict, source: str) -> Course:
    probe = Course(path, digest, source=source)
    for key, value in data.items():
        if key in ("exercises", "checks"):
            continue
        if key not in TOP_KEYS:
            raise probe._error(f"has an unknown key {key!r}", key, list(TOP_KEYS) + ["exercises", "checks"])
        _check_type(probe, key, value, TOP_KEYS[key][0])
    per_exercise = _tables(probe, "exercises", data.get("exercises", {}))
    per_check = _tables(probe, "checks", data.get("checks", {}))
    for name, table in per_exercise.items():
        for key, value in table.items():
            if key not in PART_KEYS:
                raise probe._error(f"[exercises.{name}] has an unknown key {key!r} (it takes "
                                   f"{', '.join(PART_KEYS)})", key, list(PART_KEYS))
            _check_type(probe, f"exercises.{name}.{key}", value, PART_KEYS[key][0])
    for check_id, table in per_check.items():
        for key, value in table.items():
            if key in PART_KEYS:
                _check_type(probe, f"checks.{_quoted(check_id)}.{key}", value, PART_KEYS[key][0])
    included = data.get("include")
    if included is not None:
        for i, name in enumerate(included):
            _check_type(probe, f"include[{i}]", name, str)
        if not included:
            raise CourseError(f"{path}: `include` is empty; list at least one exercise, or leave it out to grade all")
    fail_under = data.get("fail_under")
    if fail_under is not None and not 0 <= float(fail_under) <= 100:
        raise CourseError(f"{path}: `fail_under` is {fail_under}; give a score from 0 to 100")
    corpus = data.get("corpus")
    return Course(
        path=path, digest=digest, name=data.get("course", ""),
        exercises=tuple(included) if included is not None else None,
        fail_under=None if fail_under is None else float(fail_under),
        timeout=None if data.get("timeout") is None else float(data["timeout"]),
        memory_mb=data.get("memory_mb"),
        corpus=None if corpus is None else (path.parent / corpus),
        visibility=data.get("visibility"), per_exercise=per_exercise, per_check=per_check, source=source,
    )


def _tables(course: Course, key: str, value: Any) -> dict[str, dict]:
    if not isinstance(value, dict):
        hint = " (the exercises graded go in `include = [...]`)" if key == "exercises" and isinstance(value, list) else ""
        raise CourseError(f"{course.path}: `{key}` must be a table ([{key}.NAME] sections), not {_kind(value)}{hint}")
    for name, table in value.items():
        if not isinstance(table, dict):
            raise CourseError(f"{course.path}: `{key}.{_quoted(name)}` must be a table ([{key}.{_quoted(name)}]), "
                              f"not {_kind(table)}")
    return {name: dict(table) for name, table in value.items()}


def _check_type(course: Course, key: str, value: Any, wanted: type) -> None:
    """Raise a CourseError naming ``key`` when ``value`` is not a ``wanted`` (ints pass as floats)."""
    ok = isinstance(value, wanted) and not (wanted is not bool and isinstance(value, bool))
    if wanted is float and isinstance(value, int) and not isinstance(value, bool):
        ok = True
    if not ok:
        raise CourseError(f"{course.path}: `{key}` must be {_article(wanted)}, not {_kind(value)} ({value!r})")
    leaf = key.rsplit(".", 1)[-1]
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if not math.isfinite(value) or value < 0:
            raise CourseError(f"{course.path}: `{key}` is {value}; give a number of 0 or more")
        if leaf in ("timeout", "memory_mb") and value <= 0:
            raise CourseError(f"{course.path}: `{key}` is {value}; give a positive number")
    if leaf == "visibility" and value not in VISIBILITIES:
        close = difflib.get_close_matches(str(value), VISIBILITIES, n=1)
        raise CourseError(f"{course.path}: `{key}` is {value!r}; give one of {', '.join(VISIBILITIES)}"
                          + (f" (did you mean {close[0]!r}?)" if close else ""))


def _article(kind: type) -> str:
    return {str: "a string", float: "a number", int: "a whole number", list: "a list", dict: "a table",
            bool: "true or false"}.get(kind, kind.__name__)


def _kind(value: Any) -> str:
    return _article(type(value)) if type(value) in (str, float, int, list, dict, bool) else type(value).__name__
