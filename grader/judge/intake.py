"""A batch's submissions: which students a folder holds, and each one staged safely for grading.

:func:`discover` reads the layout of the folder: one entry per student (a folder, an archive or
a ``.py`` file), a Gradescope export (``submission_metadata.yml``) or a flat LMS download (Canvas,
or files named ``<student>_<exercise file>``). :func:`stage` copies one entry's ``.py`` files,
and only those, into a fresh folder the grading engine reads; archives are read member by member
under limits and never extracted as they are. Nothing here follows a symbolic link, and bad input
becomes a status or a note, never an exception.
"""

from __future__ import annotations

import bz2
import errno
import gzip
import hashlib
import io
import lzma
import os
import re
import stat
import tarfile
import zipfile
import zlib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Iterable, Optional

import yaml

from grader import registry
from grader.judge.loading import FILE_LIMIT

#: statuses of an entry that cannot be graded (the gradebook's ``status`` column)
EMPTY, BAD_ARCHIVE, UNSAFE_ARCHIVE, TOO_LARGE = "empty", "bad-archive", "unsafe-archive", "too-large"
DUPLICATE, LINK, UNREADABLE = "duplicate-id", "link", "unreadable"

#: kinds of entry; "tar" is any other tar archive, "archive" a format the grader cannot open
FOLDER, ZIP, TAR_GZ, TAR, PY, FLAT, OTHER_ARCHIVE = "folder", "zip", "tar.gz", "tar", "py", "flat", "archive"

MiB = 1 << 20
#: largest archive file, most members in an archive (or entries under a submission folder), most bytes
#: an archive's members declare or expand to, all together
ARCHIVE_LIMIT, MAX_MEMBERS, TOTAL_LIMIT = 64 * MiB, 2000, 64 * MiB
#: a member (or a compressed tar stream) over RATIO_FLOOR bytes that expands more than MAX_RATIO times is a bomb
MAX_RATIO, RATIO_FLOOR = 100, 1 * MiB
#: largest submission_metadata.yml read; longest student id
METADATA_LIMIT, ID_LENGTH = 16 * MiB, 100
#: files staged for grading (notebooks are kept for when they are graded too)
STAGED_SUFFIXES = (".py", ".ipynb")

_OPEN_FLAGS = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
_ARCHIVES = ((".tar.gz", TAR_GZ), (".tgz", TAR_GZ), (".zip", ZIP), (".tar", TAR), (".tar.bz2", TAR),
             (".tbz2", TAR), (".tar.xz", TAR), (".txz", TAR), (".rar", OTHER_ARCHIVE), (".7z", OTHER_ARCHIVE))
#: folders never looked into: caches, installed packages, macOS resource forks (hidden ones are skipped too)
_SKIPPED_DIRS = {"__MACOSX", "__pycache__", "site-packages", "node_modules"}
#: what reading a broken archive raises, by format and compression
_ARCHIVE_ERRORS = (zipfile.BadZipFile, tarfile.TarError, OSError, EOFError, zlib.error, lzma.LZMAError,
                   NotImplementedError, RuntimeError, ValueError, UnicodeError)
_ID_UNSAFE = re.compile(r"[^A-Za-z0-9._@+-]")
_CANVAS = re.compile(r"^(?P<name>[^_]+)_(?:(?P<late>late)_)?(?P<uid>\d+)_(?P<sub>\d+)_(?P<original>.+)$", re.I)
#: a name an LMS gave a repeated upload: ``rnn_scratch-1.py`` is a later ``rnn_scratch.py``
_COPY = re.compile(r"^(?P<stem>.+)-(?P<copy>\d+)(?P<ext>(?:\.tar)?\.[A-Za-z0-9]+)$")
_EXERCISE_FILES = tuple(registry.file_name(exercise.name) for exercise in registry.EXERCISES)
_NAMED = re.compile(r"^(?P<prefix>.+?)_(?P<original>(?:" + "|".join(re.escape(n[:-3]) for n in _EXERCISE_FILES)
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


@dataclass(frozen=True)
class Staged:
    #: a folder whose top level holds the submission's .py files; None when nothing can be graded
    folder: Optional[Path]
    #: None when staged fine, else a status above
    status: Optional[str]
    #: for the student and instructor: what is wrong and what to do
    message: str = ""
    #: the entry's notes from discovery, then what staging chose or left out
    notes: tuple[str, ...] = ()


class _Refused(Exception):
    """The whole entry cannot be graded: a status and its message."""

    def __init__(self, status: str, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


# ---------------------------------------------------------------------------------------------- discover


def discover(root: Path) -> Intake:
    """The students in a batch folder, found from its layout; never raises for what the folder holds."""
    root = Path(root)
    try:
        names = sorted(os.listdir(root))
    except OSError as exc:
        why = {errno.ENOENT: "does not exist", errno.ENOTDIR: "is not a folder"}.get(exc.errno,
                                                                                  f"cannot be read ({_why(exc)})")
        problem = f"{root} {why}; give the folder that holds the submissions"
        return Intake("entries", f"{root} {why}", (), (), problem=problem)
    visible = [n for n in names if not _hidden(n)]
    export = _gradescope_export(root, visible)
    if export is not None:
        return _discover_gradescope(root, export, [] if export == root else [n for n in names if n != export.name])
    return _discover_flat(root, names, visible) or _discover_entries(root, names, visible)


def _discover_entries(root: Path, names: list[str], visible: list[str]) -> Intake:
    entries, ignored = [], [_printable(n) for n in names if n not in visible]
    for name in visible:
        kind_and_stem = _entry_kind(name, _file_type(root / name))
        if kind_and_stem is None:
            ignored.append(_printable(name))
            continue
        kind, stem = kind_and_stem
        source = _printable(name) + ("/" if kind == FOLDER else "")
        entries.append(_named_entry(stem, source, kind, (root / name,), _entry_problem(root / name, kind, source)))
    found = f"{len(entries)} students" if entries else (
        "no submissions found: expected one folder, archive or .py file per student, a Gradescope export or a "
        "Canvas download")
    return Intake("entries", f"one entry per student (folders, archives, .py files): {found}",
                  _sorted(_flag_duplicates(entries)), tuple(ignored))


def _entry_kind(name: str, file_type: str) -> Optional[tuple[str, str]]:
    """(kind, name without extension) of a child of SUBMISSIONS, or None when it is not a submission."""
    if file_type == "dir":
        return FOLDER, name
    if file_type not in ("file", "link", "error"):
        return None
    lower = name.lower()
    for suffix, kind in _ARCHIVES + ((".py", PY),):
        if lower.endswith(suffix) and len(name) > len(suffix):
            return kind, name[: -len(suffix)]
    # a link, or something that cannot be looked at, with no extension: most likely a student's folder
    return (FOLDER, name) if file_type != "file" and "." not in name else None


def _archive_kind(name: str) -> Optional[str]:
    """ZIP, TAR_GZ or TAR for an archive the grader opens, from its name."""
    found = _entry_kind(name, "file")
    return found[0] if found is not None and found[0] in (ZIP, TAR_GZ, TAR) else None


def _entry_problem(path: Path, kind: str, source: str) -> Optional[tuple[str, str]]:
    file_type = _file_type(path)
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
    if _printable(raw_id) != raw_id:
        notes = (f"the name {_printable(raw_id)} is not valid UTF-8; the student's id is {student}",) + tuple(notes)
    return Entry(student, source, kind, paths, problem=problem, notes=tuple(notes), **fields)


def safe_id(raw: str) -> str:
    """A folder name made from ``raw``: safe characters only, never hidden, ``.`` or ``..``, at most ID_LENGTH."""
    text = _ID_UNSAFE.sub("_", _printable(raw))[:ID_LENGTH]
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
        sources = _join(e.source for e in group)
        same = (f"student '{ids[0]}'" if len(ids) == 1
                else f"the same student ({_join(repr(i) for i in ids)} differ only in letter case)")
        message = f"{sources} {'both' if len(group) == 2 else 'all'} name {same}; keep one and run again"
        flagged += [replace(e, problem=(DUPLICATE, message)) for e in group]
    return flagged


def _sorted(entries: Iterable[Entry]) -> tuple[Entry, ...]:
    return tuple(sorted(entries, key=lambda e: (e.student, e.source)))


# -- Gradescope export


def _gradescope_export(root: Path, visible: list[str]) -> Optional[Path]:
    """The folder holding submission_metadata.yml: SUBMISSIONS itself, or its only folder."""
    if _file_type(root / "submission_metadata.yml") != "missing":
        return root
    folders = [n for n in visible if _file_type(root / n) == "dir"]
    if len(folders) == 1 and _file_type(root / folders[0] / "submission_metadata.yml") != "missing":
        return root / folders[0]
    return None


def _discover_gradescope(root: Path, export: Path, outside: list[str]) -> Intake:
    where = "" if export == root else _printable(export.name) + "/"
    ignored = [_printable(n) for n in outside]
    submitters, broken = _read_metadata(export / "submission_metadata.yml")
    try:
        names = sorted(os.listdir(export))
    except OSError as exc:
        message = f"{where or root} cannot be read ({_why(exc)}); check its permissions and run again"
        return Intake("gradescope", f"Gradescope export: {message}", (), tuple(ignored), problem=message)
    entries = []
    for name in names:
        if name == "submission_metadata.yml":
            continue
        if not _hidden(name) and _file_type(export / name) in ("dir", "link", "error"):
            entries.append(_gradescope_entry(export / name, where, submitters, broken))
        else:
            ignored.append(where + _printable(name))
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
    source = f"{where}{_printable(path.name)}/"
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
        raw = _read_regular(path, METADATA_LIMIT)
        if len(raw) > METADATA_LIMIT:
            return {}, f"is over {METADATA_LIMIT // MiB} MiB and was not read"
        data = yaml.load(raw.decode("utf-8"), Loader=_MetadataLoader)
    except OSError as exc:
        return {}, f"cannot be read ({_why(exc)})"
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
    if not visible or any(_file_type(root / n) == "dir" for n in visible):
        return None
    canvas = {n: m for n in visible if (m := _CANVAS.match(_printable(n)))}
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
    named = {n: m for n in visible if (m := _NAMED.match(_printable(n)))}
    prefixes = sorted({m["prefix"] for m in named.values()}, key=len, reverse=True)
    grouped: dict[str, list[tuple[str, str, tuple[int, int], bool]]] = {}
    for name in visible:
        shown = _printable(name)
        if name in named:
            prefix, (original, copy) = named[name]["prefix"], _original(named[name]["original"])
        else:  # another file of a known student, e.g. alice_helpers.py, under its own name
            prefix = next((p for p in prefixes if shown.startswith(p + "_")), None)
            original, copy = shown[len(prefix or "") + 1:], 0
        if prefix is not None:
            grouped.setdefault(prefix, []).append((name, original, (copy, 0), False))
    if 2 * sum(map(len, grouped.values())) > len(visible):
        entries = [_flat_entry(root, prefix, files) for prefix, files in grouped.items()]
        how = f"files named <student>_<exercise file>, e.g. alice_{_EXERCISE_FILES[0]}"
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
    notes = [f"{_printable(name)} was replaced by a later upload, {_printable(latest[original][1])}"
             for (name, original, _, _), kept in zip(files, originals) if not kept]
    if any(late for *_, late in files):
        notes.insert(0, "submitted late (the LMS marked the files LATE)")
    names = [_printable(n) for n, *_ in files]
    source = names[0] if len(names) == 1 else os.path.commonprefix(names) + "*"
    return _named_entry(raw_id, source, FLAT, tuple(root / n for n, *_ in files), notes=tuple(notes),
                        originals=originals, **fields)


def _flat_intake(how: str, entries: list[Entry], names: list[str], used: set[str]) -> Intake:
    files = sum(len(e.paths) for e in entries)
    return Intake("flat", f"{how}: {len(entries)} students, {files} files", _sorted(_flag_duplicates(entries)),
                  tuple(_printable(n) for n in names if n not in used))


# ---------------------------------------------------------------------------------------------- stage


@dataclass(frozen=True)
class _File:
    """A file a submission holds: its path parts, declared size, and ``read(cap)``: at most ``cap + 1`` bytes."""

    parts: tuple[str, ...]
    size: int
    read: Callable[[int], bytes]


def stage(entry: Entry, dest: Path) -> Staged:
    """Copy the entry's .py (and .ipynb) files, flat, into ``dest``.

    :param entry: from :func:`discover`
    :param dest: the folder to create (it must not exist); its top level then holds the files to grade
    :raises OSError: only when ``dest`` cannot be written
    """
    dest = Path(dest)
    dest.mkdir(parents=True)
    if entry.problem is not None:
        return Staged(None, entry.problem[0], entry.problem[1], entry.notes)
    notes: list[str] = []
    try:
        if entry.kind == PY:
            files = [_file_of(entry.paths[0], (_py_name(entry),))]
            if files[0].size > FILE_LIMIT:
                raise _Refused(TOO_LARGE, f"{entry.source} is {_size(files[0].size)}; files over "
                                          f"{_size(FILE_LIMIT)} are not graded")
        elif entry.kind == FLAT:
            files = _flat_files(entry, notes)
        elif entry.kind == FOLDER:
            files = _walk(entry.paths[0], entry.source, notes)
        else:
            files = _archive_files(entry.paths[0], entry.source, entry.kind, notes)
        status, message = _write_chosen(files, dest, entry.source, notes)
    except _Refused as refused:
        status, message = refused.status, refused.message
    return Staged(dest if status is None else None, status, message, entry.notes + tuple(notes))


def _py_name(entry: Entry) -> str:
    """The name a single-file entry is staged under: its own, or its id when the name is not valid UTF-8."""
    name = entry.paths[0].name
    return name[:-3] + ".py" if _printable(name) == name else entry.student + ".py"


def _file_of(path: Path, parts: tuple[str, ...]) -> _File:
    try:
        size = os.lstat(path).st_size
    except OSError:
        size = 0  # reading it says why
    return _File(parts, size, lambda cap: _read_regular(path, cap))


def _flat_files(entry: Entry, notes: list[str]) -> list[_File]:
    """A flat entry's files under their original names; its only archive when it has no .py file."""
    files, archives, others = [], [], []
    for path, original in zip(entry.paths, entry.originals or [p.name for p in entry.paths]):
        original = _printable(original).replace("\\", "_")
        if not original:
            continue  # replaced by a later upload
        if _file_type(path) == "link":
            notes.append(f"{_printable(path.name)} is a symbolic link; it was not followed")
        elif original.endswith(STAGED_SUFFIXES):
            files.append(_file_of(path, (original,)))
        elif _archive_kind(original):
            archives.append(path)
        else:
            others.append(original)
    if others:
        notes.append(f"not graded: {_join(others, 5)}")
    return _or_only_archive(files, archives, "", notes)


def _or_only_archive(files: list[_File], archives: list[Path], within: str, notes: list[str]) -> list[_File]:
    """``files``, or when none is a .py file and there is one archive beside them, that archive's files.

    :param within: what the archive's name is shown after in messages ("alice/", or "" for a flat entry)
    """
    if any(f.parts[-1].endswith(".py") for f in files) or len(archives) != 1:
        return files
    name = _printable(archives[0].name)
    notes.append(f"used the files in {name}, the only archive")
    return _archive_files(archives[0], within + name, _archive_kind(name) or ZIP, notes)


def _walk(folder: Path, source: str, notes: list[str]) -> list[_File]:
    """The .py and .ipynb files under ``folder``; links are named in a note, never followed."""
    files, archives, links, unreadable, seen = [], [], [], [], 0
    stack: list[tuple[str, ...]] = [()]
    while stack:
        parts = stack.pop()
        try:
            with os.scandir(folder.joinpath(*parts)) as scan:
                children = sorted(scan, key=lambda c: c.name)
        except OSError as exc:
            if not parts:
                raise _Refused(UNREADABLE, f"{source} cannot be read ({_why(exc)}); check its permissions") from None
            unreadable.append(_shown(parts))
            continue
        for child in children:
            seen += 1
            if seen > MAX_MEMBERS:
                raise _Refused(TOO_LARGE, f"{source} holds more than {MAX_MEMBERS} files; submit only your .py "
                                          "files (no virtual environment, data or caches)")
            rel = parts + (child.name,)
            if _hidden(child.name) or child.name in _SKIPPED_DIRS:
                continue
            try:
                if child.is_symlink():
                    links.append("/".join(map(_printable, rel)))
                elif child.is_dir(follow_symlinks=False):
                    stack.append(rel)
                elif child.is_file(follow_symlinks=False):
                    if child.name.endswith(STAGED_SUFFIXES):
                        files.append(_file_of(Path(child.path), rel))
                    elif not parts and _archive_kind(child.name):
                        archives.append(Path(child.path))
            except OSError:  # gone, or cannot be looked at, since the folder was listed
                unreadable.append("/".join(map(_printable, rel)))
    if links:
        notes.append(f"not copied: {_join(links, 5)} (symbolic links are not followed; put the files themselves "
                     "in the folder)")
    if unreadable:
        notes.append(f"not read: {_join(unreadable, 5)}")
    return _or_only_archive(files, archives, source, notes)


def _choose_folder(files: list[_File], notes: list[str]) -> tuple[str, ...]:
    """The one folder graded: the top level if it has .py files, else the only, or the shallowest fullest, one."""
    counts: dict[tuple[str, ...], int] = {}
    for f in files:
        if f.parts[-1].endswith(".py"):
            counts[f.parts[:-1]] = counts.get(f.parts[:-1], 0) + 1
    chosen = () if () in counts else min(counts, key=lambda p: (len(p), -counts[p], p))
    others = [_shown(p) for p in sorted(counts) if p != chosen]
    if chosen and not others:
        notes.append(f"used the files in {_shown(chosen)} (the only folder with .py files)")
    elif others:
        notes.append(f"used the .py files in {_shown(chosen) if chosen else 'the top level'}, not those in "
                     f"{_join(others, 5)}: only one folder is graded, so put all your files in one folder")
    return chosen


def _write_chosen(files: list[_File], dest: Path, source: str, notes: list[str]) -> tuple[Optional[str], str]:
    """Write the chosen folder's files into ``dest``: (None, "") or, when no .py file could be, a status and why."""
    files = [f for f in files if f.parts[-1] != "__init__.py"]  # never graded
    if not any(f.parts[-1].endswith(".py") for f in files):
        notebooks = any(f.parts[-1].endswith(".ipynb") for f in files)
        return EMPTY, (f"{source} has no .py files; submit your solution's .py files (e.g. {_EXERCISE_FILES[0]})"
                       + ("; notebooks are not graded: save each one as a .py file" if notebooks else ""))
    chosen = _choose_folder(files, notes)
    skipped: list[tuple[str, str]] = []
    total, written = 0, 0
    for f in sorted((f for f in files if f.parts[:-1] == chosen), key=lambda f: f.parts[-1]):
        name = _printable(f.parts[-1])
        if len(os.fsencode(f.parts[-1])) > 200:
            skipped.append((UNREADABLE, f"{name[:40]}… has too long a name to be copied"))
            continue
        try:
            data = b"" if f.size > FILE_LIMIT else f.read(FILE_LIMIT)
        except OSError as exc:
            status, why = (LINK, "is a symbolic link") if exc.errno == errno.ELOOP else (UNREADABLE, _why(exc))
            skipped.append((status, f"{name} cannot be read ({why})"))
            continue
        if f.size > FILE_LIMIT or len(data) > FILE_LIMIT:
            skipped.append((TOO_LARGE, f"{name} is {_size(max(f.size, len(data)))}; files over "
                                       f"{_size(FILE_LIMIT)} are not graded"))
            continue
        total += len(data)
        if total > TOTAL_LIMIT:
            raise _Refused(TOO_LARGE, f"{source} has over {_size(TOTAL_LIMIT)} of .py files; submit only your "
                                      "solution")
        try:
            out = open(dest / f.parts[-1], "xb")
        except FileExistsError:  # on a filesystem that ignores letter case
            skipped.append((UNREADABLE, f"{name} has the same name as another file, but for letter case"))
            continue
        with out:
            out.write(data)
        written += f.parts[-1].endswith(".py")
    notes += [why for _, why in skipped]
    if written:
        return None, ""
    return skipped[0][0], f"{source}: " + "; ".join(why for _, why in skipped)


# -- archives


def _archive_files(path: Path, source: str, kind: str, notes: list[str]) -> list[_File]:
    """The .py and .ipynb members of a zip or tar archive, once every member passed the checks and limits."""
    try:
        raw = _read_regular(path, ARCHIVE_LIMIT)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise _Refused(LINK, f"{source} is a symbolic link; it was not followed") from None
        raise _Refused(UNREADABLE, f"{source} cannot be read ({_why(exc)}); check its permissions") from None
    if len(raw) > ARCHIVE_LIMIT:
        raise _Refused(TOO_LARGE, f"{source} is over {_size(ARCHIVE_LIMIT)}; archives that large are not graded: "
                                  "submit only your .py files")
    is_zip = kind == ZIP or raw.startswith(b"PK")
    try:
        return _zip_files(io.BytesIO(raw), source, notes) if is_zip else _tar_files(io.BytesIO(raw), len(raw), source)
    except _ARCHIVE_ERRORS as exc:
        raise _Refused(BAD_ARCHIVE, f"{source} is not a valid {'zip' if is_zip else 'tar'} archive ({_why(exc)}); it "
                                    "may be truncated or corrupt: create it again and resubmit") from None


def _zip_files(raw: io.BytesIO, source: str, notes: list[str]) -> list[_File]:
    archive = zipfile.ZipFile(raw)
    members = archive.infolist()
    _check_count(len(members), source)
    declared = 0
    for member in members:
        _check_member(member.filename, _zip_type(member), source)
        if member.flag_bits & 0x1:
            raise _Refused(BAD_ARCHIVE, f"{source} is password-protected; submit it without a password")
        _check_expansion(member.filename, member.file_size, member.compress_size, source)
        declared += member.file_size
    if declared > TOTAL_LIMIT:
        raise _Refused(TOO_LARGE, f"{source} expands to {_size(declared)}; archives over {_size(TOTAL_LIMIT)} "
                                  "unpacked are not graded: submit only your .py files")
    chosen: dict[tuple[str, ...], _File] = {}
    for member in members:
        parts = _member_parts(member.filename)
        if not member.is_dir() and _wanted(parts):
            if parts in chosen:
                notes.append(f"{'/'.join(parts)} appears twice in {source}; the last copy was used")
            chosen[parts] = _File(parts, member.file_size, lambda cap, m=member: _read_member(archive, m, cap, source))
    return list(chosen.values())


def _read_member(archive: zipfile.ZipFile, member: zipfile.ZipInfo, cap: int, source: str) -> bytes:
    try:
        with archive.open(member) as stream:  # never yields more than the member's declared size
            return stream.read(cap + 1)
    except _ARCHIVE_ERRORS as exc:
        raise _Refused(BAD_ARCHIVE, f"{source}: '{member.filename}' cannot be unpacked ({_why(exc)}); create the "
                                    "archive again and resubmit") from None


def _zip_type(member: zipfile.ZipInfo) -> str:
    mode = member.external_attr >> 16  # a Unix mode, when the archive was made on Unix
    if not stat.S_IFMT(mode) or stat.S_ISREG(mode) or stat.S_ISDIR(mode):
        return "file"
    return _type_name(mode)


class _Capped(io.RawIOBase):
    """A decompressed tar stream that stops once it gives more than the archive limits allow."""

    def __init__(self, stream: io.IOBase, compressed: int, source: str) -> None:
        super().__init__()
        self._stream, self._compressed, self._source, self._count = stream, compressed, source, 0
        self._limit = TOTAL_LIMIT + MAX_MEMBERS * 1024 + 64 * 1024  # the members, their headers and padding

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        data = self._stream.read(len(buffer))
        self._count += len(data)
        if self._count > self._limit:
            raise _Refused(TOO_LARGE, f"{self._source} expands to more than {_size(TOTAL_LIMIT)}; submit only "
                                      "your .py files")
        if self._count > RATIO_FLOOR and self._count > MAX_RATIO * max(self._compressed, 1):
            raise _Refused(TOO_LARGE, f"{self._source} expands to over {MAX_RATIO} times its size (a compression "
                                      "bomb?); submit only your .py files")
        buffer[: len(data)] = data
        return len(data)


def _tar_files(raw: io.BytesIO, size: int, source: str) -> list[_File]:
    head = raw.getvalue()[:6]
    stream: io.IOBase = raw
    if head.startswith(b"\x1f\x8b"):
        stream = gzip.GzipFile(fileobj=raw)
    elif head.startswith(b"BZh"):
        stream = bz2.BZ2File(raw)
    elif head.startswith(b"\xfd7zXZ"):
        stream = lzma.LZMAFile(raw)
    files, count, declared = [], 0, 0
    with tarfile.open(fileobj=_Capped(stream, size, source), mode="r|") as archive:
        for member in archive:  # streamed: every member is checked before anything is written
            count += 1
            _check_count(count, source)
            _check_member(member.name, _tar_type(member), source)
            declared += member.size
            if declared > TOTAL_LIMIT:
                raise _Refused(TOO_LARGE, f"{source} expands to more than {_size(TOTAL_LIMIT)}; submit only your "
                                          ".py files")
            parts = _member_parts(member.name)
            if member.isreg() and _wanted(parts):
                extracted = archive.extractfile(member)
                data = extracted.read(FILE_LIMIT + 1) if extracted is not None else b""
                files.append(_File(parts, member.size, lambda cap, data=data: data[: cap + 1]))
    return files


def _tar_type(member: tarfile.TarInfo) -> str:
    if member.isreg() or member.isdir():
        return "file"
    if member.issym() or member.islnk():
        return "link"
    return {tarfile.CHRTYPE: "device", tarfile.BLKTYPE: "device", tarfile.FIFOTYPE: "fifo"}.get(member.type, "special")


def _check_count(count: int, source: str) -> None:
    if count > MAX_MEMBERS:
        raise _Refused(TOO_LARGE, f"{source} holds more than {MAX_MEMBERS} files; submit only your .py files")


def _check_member(name: str, member_type: str, source: str) -> None:
    """Refuse the whole archive for a member that could land outside its folder or is not a plain file."""
    why = {"link": "a symbolic or hard link", "device": "a device file", "fifo": "a FIFO (named pipe)",
           "socket": "a socket", "special": "a special file"}.get(member_type)
    if name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name):
        why = "an absolute path"
    elif ".." in re.split(r"[/\\]", name):
        why = "a path that leads out of the archive's folder (..)"
    if why:
        raise _Refused(UNSAFE_ARCHIVE, f"{source} holds '{_printable(name)}', {why}; archives with such members are "
                                       "not opened: archive only your files (e.g. zip submission.zip *.py)")


def _check_expansion(name: str, size: int, compressed: int, source: str) -> None:
    if size > RATIO_FLOOR and size > MAX_RATIO * max(compressed, 1):
        raise _Refused(TOO_LARGE, f"{source} holds '{_printable(name)}', which expands from {_size(compressed)} to "
                                  f"{_size(size)} (a compression bomb?); submit only your .py files")


def _member_parts(name: str) -> tuple[str, ...]:
    return tuple(p for p in re.split(r"[/\\]", name) if p not in ("", "."))


def _wanted(parts: tuple[str, ...]) -> bool:
    """A member worth staging: a .py or .ipynb file outside hidden folders, caches and macOS forks."""
    return bool(parts) and parts[-1].endswith(STAGED_SUFFIXES) and not any(
        _hidden(p) or p in _SKIPPED_DIRS for p in parts)


# ---------------------------------------------------------------------------------------------- fingerprint


def fingerprint(entry: Entry) -> str:
    """sha256 of what the entry consists of: the same bytes give the same hash, on any machine and run.

    Every name under the entry counts, with the size of each file, the text of each link (never
    followed) and the contents of every file staging could use: .py and .ipynb files up to FILE_LIMIT,
    archives up to ARCHIVE_LIMIT. Folders staging never looks into (hidden ones, caches) count by name.
    """
    digest = hashlib.sha256(f"intake 1\0{entry.kind}\0".encode())

    def record(*fields: bytes) -> None:
        for item in fields:
            digest.update(len(item).to_bytes(8, "big") + item)

    named = entry.kind in (PY, FLAT)  # the files' own names are what gets staged
    stack = [(path, (path.name,) if named else ()) for path in reversed(entry.paths)]
    seen = 0
    while stack:
        path, rel = stack.pop()
        name = os.fsencode("/".join(rel))
        seen += 1
        if seen > MAX_MEMBERS:  # staging refuses it anyway; the count still shows
            record(b"more")
            continue
        try:
            info = os.lstat(path)
            if stat.S_ISLNK(info.st_mode):
                record(b"link", name, os.fsencode(os.readlink(path)))
            elif stat.S_ISDIR(info.st_mode):
                record(b"dir", name)
                if not rel or not (_hidden(rel[-1]) or rel[-1] in _SKIPPED_DIRS):
                    stack += [(path / child, rel + (child,)) for child in sorted(os.listdir(path), reverse=True)]
            elif stat.S_ISREG(info.st_mode):
                limit = ARCHIVE_LIMIT if not rel or _archive_kind(rel[-1]) else FILE_LIMIT
                used = not rel or rel[-1].endswith(STAGED_SUFFIXES) or _archive_kind(rel[-1])
                data = _read_regular(path, limit) if used and info.st_size <= limit else b""
                record(b"file", name, str(info.st_size).encode(), data)
            else:
                record(b"special", name, str(stat.S_IFMT(info.st_mode)).encode())
        except OSError as exc:
            record(b"error", name, str(exc.errno).encode())
    return digest.hexdigest()


# ---------------------------------------------------------------------------------------------- helpers


def _read_regular(path: Path, cap: int) -> bytes:
    """Up to ``cap + 1`` bytes of a regular file, never through a link nor waiting on a FIFO; OSError otherwise."""
    fd = os.open(path, _OPEN_FLAGS)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "not a regular file")
        chunks, size = [], 0
        while size <= cap:
            chunk = os.read(fd, min(cap + 1 - size, 4 * MiB))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    finally:
        os.close(fd)
    return b"".join(chunks)


def _file_type(path: Path) -> str:
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


def _type_name(mode: int) -> str:
    if stat.S_ISLNK(mode):
        return "link"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "device"
    return "fifo" if stat.S_ISFIFO(mode) else "socket" if stat.S_ISSOCK(mode) else "special"


def _hidden(name: str) -> bool:
    return name.startswith(".") or name == "__MACOSX"


def _printable(name: str) -> str:
    """``name`` when it is valid UTF-8, else its bytes with the undecodable ones written ``\\xff``."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return os.fsencode(name).decode("utf-8", "backslashreplace")
    return name


def _shown(parts: tuple[str, ...]) -> str:
    return "/".join(map(_printable, parts)) + "/"


def _join(items: Iterable[str], most: int = 0) -> str:
    """``a``, ``a and b``, ``a, b and c``; past ``most`` items, ``a, b and 3 more``."""
    items = list(items)
    if most and len(items) > most:
        return ", ".join(items[:most]) + f" and {len(items) - most} more"
    if len(items) < 2:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


def _size(size: int) -> str:
    return f"{size} bytes" if size < 1024 else f"{size / 1024:.0f} KiB" if size < MiB else f"{size / MiB:.1f} MiB"


def _why(exc: BaseException) -> str:
    return getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
