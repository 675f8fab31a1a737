"""A batch's students: which submissions a folder holds, each with a unique, filesystem-safe id.

:func:`discover` reads the layout of the folder: one entry per student (a folder, an archive or
a ``.py`` file), a Gradescope export (``submission_metadata.yml``) or a flat LMS download (Canvas,
or files named ``<student>_<exercise file>``). Ids that clash are flagged, never merged. An entry
that cannot be graded at all (a link, an archive format the grader cannot open) carries its
status here; :mod:`grader.judge.staging` turns the others into folders to grade. Nothing here
follows a symbolic link, and bad input becomes a status or a note, never an exception.
"""

from __future__ import annotations

import errno
import os
import re
import stat
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Iterable, Optional

import yaml

from grader import registry
from grader.judge.loading import printable_name, read_regular
from grader.protocol import MiB

#: statuses of an entry that cannot be graded (the gradebook's ``status`` column); staging gives them too
EMPTY, BAD_ARCHIVE, DUPLICATE, LINK, UNREADABLE = "empty", "bad-archive", "duplicate-id", "link", "unreadable"

#: kinds of entry; "tar" is any other tar archive, "archive" a format the grader cannot open
FOLDER, ZIP, TAR_GZ, TAR, PY, FLAT, OTHER_ARCHIVE = "folder", "zip", "tar.gz", "tar", "py", "flat", "archive"

#: largest submission_metadata.yml read; longest student id
METADATA_LIMIT, ID_LENGTH = 16 * MiB, 100
#: the exercises' file names, as the skeletons give them
EXERCISE_FILES = tuple(registry.file_name(exercise.name) for exercise in registry.EXERCISES)

_ARCHIVES = ((".tar.gz", TAR_GZ), (".tgz", TAR_GZ), (".zip", ZIP), (".tar", TAR), (".tar.bz2", TAR),
             (".tbz2", TAR), (".tar.xz", TAR), (".txz", TAR), (".rar", OTHER_ARCHIVE), (".7z", OTHER_ARCHIVE))
_ID_UNSAFE = re.compile(r"[^A-Za-z0-9._@+-]")
_CANVAS = re.compile(r"^(?P<name>[^_]+)_(?:(?P<late>late)_)?(?P<uid>\d+)_(?P<sub>\d+)_(?P<original>.+)$", re.I)
#: a name an LMS gave a repeated upload: ``rnn_scratch-1.py`` is a later ``rnn_scratch.py``
_COPY = re.compile(r"^(?P<stem>.+)-(?P<copy>\d+)(?P<ext>(?:\.tar)?\.[A-Za-z0-9]+)$")
_NAMED = re.compile(r"^(?P<prefix>.+?)_(?P<original>(?:" + "|".join(re.escape(n[:-3]) for n in EXERCISE_FILES)
                    + r")(?:-\d+)?\.py)$")


@dataclass(frozen=True)
class Entry:
    """One student's submission as found in the batch folder."""

    #: unique, filesystem-safe id: the name of RESULTS/<student>/
    student: str
    #: what it came from, relative to SUBMISSIONS, for messages ("alice.zip", "alice/")
    source: str
    #: one of FOLDER, ZIP, TAR_GZ, TAR, PY, FLAT (files grouped by prefix), OTHER_ARCHIVE
    kind: str
    #: the entry itself (one path), or the student's files for FLAT
    paths: tuple[Path, ...]
    name: Optional[str] = None
    email: Optional[str] = None
    #: the LMS's own student id when the layout gives one (Gradescope sid, Canvas user id)
    lms_id: Optional[str] = None
    #: (status, message): the entry cannot be graded at all
    problem: Optional[tuple[str, str]] = None
    #: what discovery noticed (late, renamed, missing metadata); stage() passes them on
    notes: tuple[str, ...] = ()
    #: FLAT only: the name each of ``paths`` is staged under; "" for a file a later upload replaced
    originals: tuple[str, ...] = ()


@dataclass(frozen=True)
class Intake:
    """What :func:`discover` found in a batch folder."""

    #: "entries" | "gradescope" | "flat"
    layout: str
    #: one line for the terminal
    description: str
    #: sorted by student id
    entries: tuple[Entry, ...]
    #: things in SUBMISSIONS that are not submissions, named for a notice
    ignored: tuple[str, ...]
    #: the folder itself cannot be used (missing, not a folder, unreadable): say so and stop
    problem: Optional[str] = None


# ---------------------------------------------------------------------------------------------- discover


def discover(root: Path) -> Intake:
    """The students in a batch folder, found from its layout; never raises for what the folder holds."""
    root = Path(root)
    try:
        names = sorted(os.listdir(root))
    except OSError as exc:
        why = {errno.ENOENT: "does not exist", errno.ENOTDIR: "is not a folder"}.get(exc.errno,
                                                                                  f"cannot be read ({reason(exc)})")
        problem = f"{root} {why}; give the folder that holds the submissions"
        return Intake("entries", f"{root} {why}", (), (), problem=problem)
    visible = [n for n in names if not is_hidden(n)]
    export = _gradescope_export(root, visible)
    if export is not None:
        return _discover_gradescope(root, export, [] if export == root else [n for n in names if n != export.name])
    return _discover_flat(root, names, visible) or _discover_entries(root, names, visible)


def _discover_entries(root: Path, names: list[str], visible: list[str]) -> Intake:
    entries, ignored = [], [printable_name(n) for n in names if n not in visible]
    for name in visible:
        kind_and_stem = _entry_kind(name, path_type(root / name))
        if kind_and_stem is None:
            ignored.append(printable_name(name))
            continue
        kind, stem = kind_and_stem
        source = printable_name(name) + ("/" if kind == FOLDER else "")
        entries.append(_named_entry(stem, source, kind, (root / name,), _entry_problem(root / name, kind, source)))
    found = f"{len(entries)} students" if entries else (
        "no submissions found: expected one folder, archive, .py file or notebook per student, a Gradescope export or a "
        "Canvas download")
    return Intake("entries", f"one entry per student (folders, archives, .py files, notebooks): {found}",
                  _sorted(_flag_duplicates(entries)), tuple(ignored))


def _entry_kind(name: str, file_type: str) -> Optional[tuple[str, str]]:
    """(kind, name without extension) of a child of SUBMISSIONS, or None when it is not a submission."""
    if file_type == "dir":
        return FOLDER, name
    if file_type not in ("file", "link", "error"):
        return None
    lower = name.lower()
    for suffix, kind in _ARCHIVES + ((".py", PY), (".ipynb", PY)):  # PY: one file, a script or a notebook
        if lower.endswith(suffix) and len(name) > len(suffix):
            return kind, name[: -len(suffix)]
    # a link, or something that cannot be looked at, with no extension: most likely a student's folder
    return (FOLDER, name) if file_type != "file" and "." not in name else None


def archive_kind(name: str) -> Optional[str]:
    """ZIP, TAR_GZ or TAR for an archive the grader opens, from its name."""
    found = _entry_kind(name, "file")
    return found[0] if found is not None and found[0] in (ZIP, TAR_GZ, TAR) else None


def _entry_problem(path: Path, kind: str, source: str) -> Optional[tuple[str, str]]:
    file_type = path_type(path)
    if file_type == "link":
        return LINK, f"{source} is a symbolic link; it was not followed (put the submission itself in the folder)"
    if file_type == "error":
        return UNREADABLE, f"{source} cannot be read; check its permissions and run again"
    if kind == OTHER_ARCHIVE:
        return BAD_ARCHIVE, f"{source} is an archive format the grader cannot open; submit a .zip or .tar.gz"
    return None


def _named_entry(raw_id: str, source: str, kind: str, paths: tuple[Path, ...],
                 problem: Optional[tuple[str, str]] = None, **fields) -> Entry:
    """An entry whose id comes from ``raw_id``, with a note when that name is not valid UTF-8."""
    student = safe_id(raw_id)
    notes = fields.pop("notes", ())
    if printable_name(raw_id) != raw_id:
        notes = (f"the name {printable_name(raw_id)} is not valid UTF-8; the student's id is {student}",) + tuple(notes)
    return Entry(student, source, kind, paths, problem=problem, notes=tuple(notes), **fields)


def safe_id(raw: str) -> str:
    """A folder name made from ``raw``: safe characters only, never hidden, ``.`` or ``..``, at most ID_LENGTH."""
    text = _ID_UNSAFE.sub("_", printable_name(raw))[:ID_LENGTH]
    return "_" + text[1:] if text.startswith(".") else text or "_"


def _flag_duplicates(entries: list[Entry]) -> list[Entry]:
    """Every entry whose id another one also has (in any letter case) gets DUPLICATE, naming all of them."""
    groups: dict[str, list[Entry]] = {}
    for entry in entries:
        groups.setdefault(entry.student.casefold(), []).append(entry)
    flagged = []
    for group in groups.values():
        if len(group) == 1:
            flagged += group
            continue
        ids = sorted({e.student for e in group})
        sources = join_names(e.source for e in group)
        same = (f"student '{ids[0]}'" if len(ids) == 1
                else f"the same student ({join_names(repr(i) for i in ids)} differ only in letter case)")
        message = f"{sources} {'both' if len(group) == 2 else 'all'} name {same}; keep one and run again"
        flagged += [replace(e, problem=(DUPLICATE, message)) for e in group]
    return flagged


def _sorted(entries: Iterable[Entry]) -> tuple[Entry, ...]:
    return tuple(sorted(entries, key=lambda e: (e.student, e.source)))


# -- Gradescope export


def _gradescope_export(root: Path, visible: list[str]) -> Optional[Path]:
    """The folder holding submission_metadata.yml: SUBMISSIONS itself, or its only folder."""
    if path_type(root / "submission_metadata.yml") != "missing":
        return root
    folders = [n for n in visible if path_type(root / n) == "dir"]
    if len(folders) == 1 and path_type(root / folders[0] / "submission_metadata.yml") != "missing":
        return root / folders[0]
    return None


def _discover_gradescope(root: Path, export: Path, outside: list[str]) -> Intake:
    where = "" if export == root else printable_name(export.name) + "/"
    ignored = [printable_name(n) for n in outside]
    submitters, broken = _read_metadata(export / "submission_metadata.yml")
    try:
        names = sorted(os.listdir(export))
    except OSError as exc:
        message = f"{where or root} cannot be read ({reason(exc)}); check its permissions and run again"
        return Intake("gradescope", f"Gradescope export: {message}", (), tuple(ignored), problem=message)
    entries = []
    for name in names:
        if name == "submission_metadata.yml":
            continue
        if not is_hidden(name) and path_type(export / name) in ("dir", "link", "error"):
            entries.append(_gradescope_entry(export / name, where, submitters, broken))
        else:
            ignored.append(where + printable_name(name))
    for missing in sorted(set(submitters) - set(names)):  # listed, but the export has no files for it
        entry = _gradescope_entry(export / missing, where, submitters, broken)
        entries.append(replace(entry, problem=(EMPTY, f"{entry.source} is listed in submission_metadata.yml but the "
                                                      "export has no folder for it; download the export again")))
    metadata = f"{where}submission_metadata.yml"
    how = (f"{metadata} {broken}; submissions are named by their folders" if broken else metadata)
    return Intake("gradescope", f"Gradescope export ({how}): {len(entries)} submissions",
                  _sorted(_flag_duplicates(_unique_gradescope_ids(entries))), tuple(ignored))


def _gradescope_entry(path: Path, where: str, submitters: dict[str, list[dict[str, str]]],
                      broken: Optional[str]) -> Entry:
    source = f"{where}{printable_name(path.name)}/"
    people = submitters.get(path.name)
    if people is None:
        notes = () if broken else (f"{source} is not in submission_metadata.yml; it is named by its folder",)
        return _named_entry(path.name, source, FOLDER, (path,), _entry_problem(path, FOLDER, source), notes=notes)
    first = people[0] if people else {}
    raw_id = first.get("email", "").split("@", 1)[0] or first.get("sid", "") or path.name

    def joined(field: str) -> Optional[str]:
        return ", ".join(p[field] for p in people if p.get(field)) or None

    return _named_entry(raw_id, source, FOLDER, (path,), _entry_problem(path, FOLDER, source),
                        name=joined("name"), email=joined("email"), lms_id=joined("sid"))


def _unique_gradescope_ids(entries: list[Entry]) -> list[Entry]:
    """Submissions whose students share an id (alice@a.edu, alice@b.edu) are told apart by their folders."""
    counts: dict[str, int] = {}
    for entry in entries:
        counts[entry.student.casefold()] = counts.get(entry.student.casefold(), 0) + 1
    unique = []
    for entry in entries:
        if counts[entry.student.casefold()] > 1:
            student = safe_id(f"{entry.student}_{entry.paths[0].name}")
            note = f"another submission's student is also named {entry.student}; this one's id is {student}"
            entry = replace(entry, student=student, notes=entry.notes + (note,))
        unique.append(entry)
    return unique


class _MetadataLoader(yaml.SafeLoader):
    """Safe YAML that reads values with unknown tags (Ruby's, in an export) as plain data."""


def _untagged(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> object:
    if isinstance(node, yaml.MappingNode):
        return loader.construct_mapping(node, deep=True)
    if isinstance(node, yaml.SequenceNode):
        return loader.construct_sequence(node, deep=True)
    return loader.construct_scalar(node)


_MetadataLoader.add_multi_constructor("!", _untagged)


def _read_metadata(path: Path) -> tuple[dict[str, list[dict[str, str]]], Optional[str]]:
    """Submission folder -> its submitters' name, email and sid; else an empty map and why not."""
    try:
        raw = read_regular(path, METADATA_LIMIT)[0]
        if len(raw) > METADATA_LIMIT:
            return {}, f"is over {METADATA_LIMIT // MiB} MiB and was not read"
        data = yaml.load(raw.decode("utf-8"), Loader=_MetadataLoader)
    except OSError as exc:
        return {}, f"cannot be read ({reason(exc)})"
    except (yaml.YAMLError, UnicodeDecodeError, ValueError, TypeError, RecursionError) as exc:
        return {}, f"is not valid YAML ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})"
    if not isinstance(data, dict):
        return {}, "does not list submissions"
    submitters = {}
    for key, record in data.items():
        people = _field(record, "submitters") if isinstance(record, dict) else None
        people = [p for p in people if isinstance(p, dict)] if isinstance(people, list) else []
        submitters[str(key)] = [{f: str(_field(p, f)).strip() for f in ("name", "email", "sid")
                                 if _field(p, f) not in (None, "")} for p in people]
    return submitters, None


def _field(mapping: dict, key: str) -> object:
    """A metadata field, whether its key keeps Ruby's leading colon or not."""
    return mapping.get(f":{key}", mapping.get(key))


# -- flat LMS downloads


def _discover_flat(root: Path, names: list[str], visible: list[str]) -> Optional[Intake]:
    """Files named with a student prefix (Canvas, or ``<student>_<exercise file>``), when most files are."""
    if not visible or any(path_type(root / n) == "dir" for n in visible):
        return None
    canvas = {n: m for n in visible if (m := _CANVAS.match(printable_name(n)))}
    if 2 * len(canvas) > len(visible):
        groups: dict[tuple[str, str], list[tuple[str, str, tuple[int, int], bool]]] = {}
        for name, m in canvas.items():
            original, copy = _original(m["original"])
            late = bool(m["late"])
            groups.setdefault((m["name"], m["uid"]), []).append((name, original, (copy, int(m["sub"])), late))
        entries = [_flat_entry(root, f"{who}_{uid}", files, name=who, lms_id=uid)
                   for (who, uid), files in groups.items()]
        how = "Canvas download (files named name_userid_submissionid_file)"
        return _flat_intake(how, entries, names, set(canvas))
    named = {n: m for n in visible if (m := _NAMED.match(printable_name(n)))}
    prefixes = sorted({m["prefix"] for m in named.values()}, key=len, reverse=True)
    grouped: dict[str, list[tuple[str, str, tuple[int, int], bool]]] = {}
    for name in visible:
        shown = printable_name(name)
        if name in named:
            prefix, (original, copy) = named[name]["prefix"], _original(named[name]["original"])
        else:  # another file of a known student, e.g. alice_helpers.py, under its own name
            prefix = next((p for p in prefixes if shown.startswith(p + "_")), None)
            original, copy = shown[len(prefix or "") + 1:], 0
        if prefix is not None:
            grouped.setdefault(prefix, []).append((name, original, (copy, 0), False))
    if 2 * sum(map(len, grouped.values())) > len(visible):
        entries = [_flat_entry(root, prefix, files) for prefix, files in grouped.items()]
        how = f"files named <student>_<exercise file>, e.g. alice_{EXERCISE_FILES[0]}"
        return _flat_intake(how, entries, names, {n for files in grouped.values() for n, *_ in files})
    return None


def _original(name: str) -> tuple[str, int]:
    """The name a student gave a file, and which repeated upload it is (0 for the first)."""
    m = _COPY.match(name)
    return (m["stem"] + m["ext"], int(m["copy"])) if m else (name, 0)


def _flat_entry(root: Path, raw_id: str, files: list[tuple[str, str, tuple[int, int], bool]], **fields) -> Entry:
    """One student's files; of several uploads under one name, the latest is staged and the others noted."""
    latest: dict[str, tuple[tuple[int, int], str]] = {}
    for name, original, rank, _late in files:
        latest[original] = max(latest.get(original, (rank, name)), (rank, name))
    files = sorted(files)
    originals = tuple(original if latest[original][1] == name else "" for name, original, _, _ in files)
    notes = [f"{printable_name(name)} was replaced by a later upload, {printable_name(latest[original][1])}"
             for (name, original, _, _), kept in zip(files, originals) if not kept]
    if any(late for *_, late in files):
        notes.insert(0, "submitted late (the LMS marked the files LATE)")
    names = [printable_name(n) for n, *_ in files]
    source = names[0] if len(names) == 1 else os.path.commonprefix(names) + "*"
    return _named_entry(raw_id, source, FLAT, tuple(root / n for n, *_ in files), notes=tuple(notes),
                        originals=originals, **fields)


def _flat_intake(how: str, entries: list[Entry], names: list[str], used: set[str]) -> Intake:
    files = sum(len(e.paths) for e in entries)
    return Intake("flat", f"{how}: {len(entries)} students, {files} files", _sorted(_flag_duplicates(entries)),
                  tuple(printable_name(n) for n in names if n not in used))


# ---------------------------------------------------------------------------------------------- helpers
# shared with staging: looking at a submission's files without following a link, and naming them


def path_type(path: Path) -> str:
    """"dir", "file", "link", "other", "missing" or "error", without following a link."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return "missing"
    except OSError:
        return "error"
    if stat.S_ISLNK(mode):
        return "link"
    return "dir" if stat.S_ISDIR(mode) else "file" if stat.S_ISREG(mode) else "other"


def is_hidden(name: str) -> bool:
    """A name never looked into: dot files and folders, macOS resource forks."""
    return name.startswith(".") or name == "__MACOSX"


def join_names(items: Iterable[str], most: int = 0) -> str:
    """``a``, ``a and b``, ``a, b and c``; past ``most`` items, ``a, b and 3 more``."""
    items = list(items)
    if most and len(items) > most:
        return ", ".join(items[:most]) + f" and {len(items) - most} more"
    if len(items) < 2:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


def reason(exc: BaseException) -> str:
    """What went wrong, in words, for a message."""
    return getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
