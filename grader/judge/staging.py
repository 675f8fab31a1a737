"""One student's entry turned into a folder to grade, and the fingerprint that says whether it changed.

:func:`stage` copies the entry's ``.py`` files, and only those, into a fresh folder the grading
engine reads: from a folder, one file, a flat LMS download's files or an archive. Archives are
read member by member under limits (size, member count, expansion ratio) and never extracted as
they are; a member that is a link or leads out of the archive refuses the whole archive. Of
several folders holding ``.py`` files, one is chosen and the others are named in a note.
:func:`fingerprint` hashes what staging could use, so that an unchanged entry need not be graded
again. Nothing here follows a symbolic link, and bad input becomes a status or a note, never an
exception.
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
from typing import Callable, Optional

from grader.judge.intake import (
    BAD_ARCHIVE, EMPTY, EXERCISE_FILES, FLAT, FOLDER, LINK, PY, UNREADABLE, ZIP, Entry, archive_kind, is_hidden, join_names, path_type, reason,
)
from grader.judge.loading import printable_name, read_regular, size_limit
from grader.protocol import MiB

#: statuses of an entry staging cannot turn into a folder to grade, besides intake's EMPTY, BAD_ARCHIVE,
#: LINK and UNREADABLE
UNSAFE_ARCHIVE, TOO_LARGE = "unsafe-archive", "too-large"

#: largest archive file, most members in an archive (or entries under a submission folder), most bytes
#: an archive's members declare or expand to, all together
ARCHIVE_LIMIT, MAX_MEMBERS, TOTAL_LIMIT = 64 * MiB, 2000, 64 * MiB
#: a member (or a compressed tar stream) over RATIO_FLOOR bytes that expands more than MAX_RATIO times is a bomb
MAX_RATIO, RATIO_FLOOR = 100, 1 * MiB
#: archives files_under opens in one submission, the shallowest first
MAX_OPENED = 4
#: files staged for grading: modules and notebooks (graded as modules, :mod:`grader.notebooks`)
STAGED_SUFFIXES = (".py", ".ipynb")

#: folders never looked into: caches, installed packages, macOS resource forks (hidden ones are skipped too)
_SKIPPED_DIRS = {"__MACOSX", "__pycache__", "site-packages", "node_modules"}
#: what reading a broken archive raises, by format and compression
_ARCHIVE_ERRORS = (zipfile.BadZipFile, tarfile.TarError, OSError, EOFError, zlib.error, lzma.LZMAError,
                   NotImplementedError, RuntimeError, ValueError, UnicodeError)


@dataclass(frozen=True)
class Staged:
    """One entry staged: the folder to grade, or the status that says why there is none."""

    #: a folder whose top level holds the submission's .py files; None when nothing can be graded
    folder: Optional[Path]
    #: None when staged fine, else a status (one above, or one of intake's)
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


# ---------------------------------------------------------------------------------------------- stage


@dataclass(frozen=True)
class _File:
    """A file a submission holds: its path parts, declared size, and ``read(cap)``: at most ``cap + 1`` bytes."""

    parts: tuple[str, ...]
    size: int
    read: Callable[[int], bytes]


def stage(entry: Entry, dest: Path) -> Staged:
    """Copy the entry's .py (and .ipynb) files, flat, into ``dest``.

    :param entry: from :func:`grader.judge.intake.discover`
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
            limit = size_limit(files[0].parts[-1])
            if files[0].size > limit:
                raise _Refused(TOO_LARGE, f"{entry.source} is {_size(files[0].size)}; files over "
                                          f"{_size(limit)} are not graded")
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
    """The name a single-file entry (a script or a notebook) is staged under: its own, or its id when the name
    is not valid UTF-8."""
    name = entry.paths[0].name
    suffix = ".ipynb" if name.lower().endswith(".ipynb") else ".py"
    return name[: -len(suffix)] + suffix if printable_name(name) == name else entry.student + suffix


def _file_of(path: Path, parts: tuple[str, ...]) -> _File:
    try:
        size = os.lstat(path).st_size
    except OSError:
        size = 0  # reading it says why
    return _File(parts, size, lambda cap: read_regular(path, cap)[0])


def _flat_files(entry: Entry, notes: list[str]) -> list[_File]:
    """A flat entry's files under their original names; its only archive when it has no .py file."""
    files, archives, others = [], [], []
    for path, original in zip(entry.paths, entry.originals or [p.name for p in entry.paths]):
        original = printable_name(original).replace("\\", "_")
        if not original:
            continue  # replaced by a later upload
        if path_type(path) == "link":
            notes.append(f"{printable_name(path.name)} is a symbolic link; it was not followed")
        elif original.endswith(STAGED_SUFFIXES):
            files.append(_file_of(path, (original,)))
        elif archive_kind(original):
            archives.append(path)
        else:
            others.append(original)
    if others:
        notes.append(f"not graded: {join_names(others, 5)}")
    return _or_only_archive(files, archives, "", notes)


def _or_only_archive(files: list[_File], archives: list[Path], within: str, notes: list[str]) -> list[_File]:
    """``files``, or when none is a .py file and there is one archive beside them, that archive's files.

    :param within: what the archive's name is shown after in messages ("alice/", or "" for a flat entry)
    """
    if any(f.parts[-1].endswith(".py") for f in files) or len(archives) != 1:
        return files
    name = printable_name(archives[0].name)
    notes.append(f"used the files in {name}, the only archive")
    return _archive_files(archives[0], within + name, archive_kind(name) or ZIP, notes)


def _walk(folder: Path, source: str, notes: list[str], nested: Optional[list[tuple[str, ...]]] = None) -> list[_File]:
    """The .py and .ipynb files under ``folder``; links are named in a note, never followed.

    :param nested: when given, every archive at any depth is listed there (its path parts) and none is
        opened; else the only archive at the top is opened when there is no .py file
    """
    files, archives, links, unreadable, seen = [], [], [], [], 0
    stack: list[tuple[str, ...]] = [()]
    while stack:
        parts = stack.pop()
        try:
            with os.scandir(folder.joinpath(*parts)) as scan:
                children = sorted(scan, key=lambda c: c.name)
        except OSError as exc:
            if not parts:
                raise _Refused(UNREADABLE, f"{source} cannot be read ({reason(exc)}); check its permissions") from None
            unreadable.append(_shown(parts))
            continue
        for child in children:
            seen += 1
            if seen > MAX_MEMBERS:
                raise _Refused(TOO_LARGE, f"{source} holds more than {MAX_MEMBERS} files; submit only your .py "
                                          "files (no virtual environment, data or caches)")
            rel = parts + (child.name,)
            if is_hidden(child.name) or child.name in _SKIPPED_DIRS:
                continue
            try:
                if child.is_symlink():
                    links.append("/".join(map(printable_name, rel)))
                elif child.is_dir(follow_symlinks=False):
                    stack.append(rel)
                elif child.is_file(follow_symlinks=False):
                    if child.name.endswith(STAGED_SUFFIXES):
                        files.append(_file_of(Path(child.path), rel))
                    elif archive_kind(child.name) and nested is not None:
                        nested.append(rel)
                    elif not parts and archive_kind(child.name):
                        archives.append(Path(child.path))
            except OSError:  # gone, or cannot be looked at, since the folder was listed
                unreadable.append("/".join(map(printable_name, rel)))
    if links:
        notes.append(f"not copied: {join_names(links, 5)} (symbolic links are not followed; put the files themselves "
                     "in the folder)")
    if unreadable:
        notes.append(f"not read: {join_names(unreadable, 5)}")
    return files if nested is not None else _or_only_archive(files, archives, source, notes)


def _choose_folder(files: list[_File], notes: list[str]) -> tuple[str, ...]:
    """The one folder graded: the top level if it has .py files, else the only, or the shallowest fullest, one
    (counting notebooks when no folder has a .py file)."""
    counts: dict[tuple[str, ...], int] = {}
    # folders with .py files first; notebooks decide only where there are none (a notes.ipynb beside exercises/)
    graded = ".py" if any(f.parts[-1].endswith(".py") for f in files) else STAGED_SUFFIXES
    for f in files:
        if f.parts[-1].endswith(graded):
            counts[f.parts[:-1]] = counts.get(f.parts[:-1], 0) + 1
    chosen = () if () in counts else min(counts, key=lambda p: (len(p), -counts[p], p))
    others = [_shown(p) for p in sorted(counts) if p != chosen]
    if chosen and not others:
        notes.append(f"used the files in {_shown(chosen)} (the only folder with .py files)")
    elif others:
        notes.append(f"used the .py files in {_shown(chosen) if chosen else 'the top level'}, not those in "
                     f"{join_names(others, 5)}: only one folder is graded, so put all your files in one folder")
    return chosen


def _write_chosen(files: list[_File], dest: Path, source: str, notes: list[str]) -> tuple[Optional[str], str]:
    """Write the chosen folder's files into ``dest``: (None, "") or, when no .py file could be, a status and why."""
    files = [f for f in files if f.parts[-1] != "__init__.py"]  # never graded
    if not any(f.parts[-1].endswith(STAGED_SUFFIXES) for f in files):
        return EMPTY, (f"{source} has no .py files or notebooks; submit your solution's .py files "
                       f"(e.g. {EXERCISE_FILES[0]}) or your notebook (.ipynb)")
    chosen = _choose_folder(files, notes)
    skipped: list[tuple[str, str]] = []
    total, written = 0, 0
    for f in sorted((f for f in files if f.parts[:-1] == chosen), key=lambda f: f.parts[-1]):
        name = printable_name(f.parts[-1])
        if len(os.fsencode(f.parts[-1])) > 200:
            skipped.append((UNREADABLE, f"{name[:40]}… has too long a name to be copied"))
            continue
        limit = size_limit(f.parts[-1])
        try:
            data = b"" if f.size > limit else f.read(limit)
        except OSError as exc:
            status, why = (LINK, "is a symbolic link") if exc.errno == errno.ELOOP else (UNREADABLE, reason(exc))
            skipped.append((status, f"{name} cannot be read ({why})"))
            continue
        if f.size > limit or len(data) > limit:
            skipped.append((TOO_LARGE, f"{name} is {_size(max(f.size, len(data)))}; files over "
                                       f"{_size(limit)} are not graded"))
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
        written += f.parts[-1].endswith(STAGED_SUFFIXES)
    notes += [why for _, why in skipped]
    if written:
        return None, ""
    return skipped[0][0], f"{source}: " + "; ".join(why for _, why in skipped)


# -- archives


def _archive_files(path: Path, source: str, kind: str, notes: list[str]) -> list[_File]:
    """The .py and .ipynb members of a zip or tar archive, once every member passed the checks and limits."""
    try:
        raw = read_regular(path, ARCHIVE_LIMIT)[0]
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise _Refused(LINK, f"{source} is a symbolic link; it was not followed") from None
        raise _Refused(UNREADABLE, f"{source} cannot be read ({reason(exc)}); check its permissions") from None
    if len(raw) > ARCHIVE_LIMIT:
        raise _Refused(TOO_LARGE, f"{source} is over {_size(ARCHIVE_LIMIT)}; archives that large are not graded: "
                                  "submit only your .py files")
    is_zip = kind == ZIP or raw.startswith(b"PK")
    try:
        return _zip_files(io.BytesIO(raw), source, notes) if is_zip else _tar_files(io.BytesIO(raw), len(raw), source)
    except _ARCHIVE_ERRORS as exc:
        raise _Refused(BAD_ARCHIVE, f"{source} is not a valid {'zip' if is_zip else 'tar'} archive ({reason(exc)}); it "
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
        raise _Refused(BAD_ARCHIVE, f"{source}: '{member.filename}' cannot be unpacked ({reason(exc)}); create the "
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
                data = extracted.read(size_limit(parts[-1]) + 1) if extracted is not None else b""
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
        raise _Refused(UNSAFE_ARCHIVE, f"{source} holds '{printable_name(name)}', {why}; archives with such members are "
                                       "not opened: archive only your files (e.g. zip submission.zip *.py)")


def _check_expansion(name: str, size: int, compressed: int, source: str) -> None:
    if size > RATIO_FLOOR and size > MAX_RATIO * max(compressed, 1):
        raise _Refused(TOO_LARGE, f"{source} holds '{printable_name(name)}', which expands from {_size(compressed)} to "
                                  f"{_size(size)} (a compression bomb?); submit only your .py files")


def _member_parts(name: str) -> tuple[str, ...]:
    return tuple(p for p in re.split(r"[/\\]", name) if p not in ("", "."))


def _wanted(parts: tuple[str, ...]) -> bool:
    """A member worth staging: a .py or .ipynb file outside hidden folders, caches and macOS forks."""
    return bool(parts) and parts[-1].endswith(STAGED_SUFFIXES) and not any(
        is_hidden(p) or p in _SKIPPED_DIRS for p in parts)


# ---------------------------------------------------------------------------------------------- choosing elsewhere
# The Gradescope autograder (grader.autograder_run) chooses a submission's files itself, by exercise file name
# and across folders; it reads and writes them through these, under the same limits and rules as stage().


def files_under(folder: Path, source: str) -> tuple[list[_File], list[str], Optional[tuple[str, str]]]:
    """Every .py and .ipynb file under ``folder``, and those in its archives at any depth (the shallowest
    MAX_OPENED ones), each archive's files under its path as if it were a folder.

    Each file has ``parts`` (its path under ``folder``), ``size`` and ``read(cap)``. Returns the files,
    notes (links not followed, unreadable folders, archives not opened and why) and, when the folder
    cannot be used at all (unreadable, too many files), (status, message) instead.
    """
    folder, notes, nested = Path(folder), [], []
    try:
        files = _walk(folder, source, notes, nested)
    except _Refused as refused:
        return [], notes, (refused.status, refused.message)
    nested.sort(key=lambda parts: (len(parts), parts))
    if len(nested) > MAX_OPENED:
        notes.append(f"not opened: {join_names((_shown(p).rstrip('/') for p in nested[MAX_OPENED:]), 5)} (only the "
                     f"{MAX_OPENED} archives nearest the top are)")
    for parts in nested[:MAX_OPENED]:
        name = source + _shown(parts).rstrip("/")
        try:
            members = _archive_files(folder.joinpath(*parts), name, archive_kind(parts[-1]) or ZIP, notes)
        except _Refused as refused:
            notes.append(f"not opened: {refused.message}")
            continue
        files += [replace(f, parts=parts + f.parts) for f in members]
    return files, notes, None


def write_flat(files: list[_File], dest: Path, source: str) -> tuple[Optional[tuple[str, str]], list[str]]:
    """Write ``files`` (from :func:`files_under`) into the existing folder ``dest``, each under its own name.

    Returns (status, message) when no .py file could be written (else None), and notes on the files
    left out (too large, unreadable).
    """
    notes: list[str] = []
    flat = [replace(f, parts=(f.parts[-1],)) for f in files]
    try:
        status, message = _write_chosen(flat, Path(dest), source, notes)
    except _Refused as refused:
        status, message = refused.status, refused.message
    return (None if status is None else (status, message)), notes


# ---------------------------------------------------------------------------------------------- fingerprint


def fingerprint(entry: Entry) -> str:
    """sha256 of what the entry consists of: the same bytes give the same hash, on any machine and run.

    Every name under the entry counts, with the size of each file, the text of each link (never
    followed) and the contents of every file staging could use: .py and .ipynb files up to their size_limit,
    archives up to ARCHIVE_LIMIT. Folders staging never looks into (hidden ones, caches) count by name.
    """
    # the label is part of every fingerprint a batch has stored: changing it regrades every student
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
                if not rel or not (is_hidden(rel[-1]) or rel[-1] in _SKIPPED_DIRS):
                    stack += [(path / child, rel + (child,)) for child in sorted(os.listdir(path), reverse=True)]
            elif stat.S_ISREG(info.st_mode):
                limit = ARCHIVE_LIMIT if not rel or archive_kind(rel[-1]) else size_limit(rel[-1])
                used = not rel or rel[-1].endswith(STAGED_SUFFIXES) or archive_kind(rel[-1])
                data = read_regular(path, limit)[0] if used and info.st_size <= limit else b""
                record(b"file", name, str(info.st_size).encode(), data)
            else:
                record(b"special", name, str(stat.S_IFMT(info.st_mode)).encode())
        except OSError as exc:
            record(b"error", name, str(exc.errno).encode())
    return digest.hexdigest()


# ---------------------------------------------------------------------------------------------- helpers


def _type_name(mode: int) -> str:
    if stat.S_ISLNK(mode):
        return "link"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "device"
    return "fifo" if stat.S_ISFIFO(mode) else "socket" if stat.S_ISSOCK(mode) else "special"


def _shown(parts: tuple[str, ...]) -> str:
    return "/".join(map(printable_name, parts)) + "/"


def _size(size: int) -> str:
    return f"{size} bytes" if size < 1024 else f"{size / 1024:.0f} KiB" if size < MiB else f"{size / MiB:.1f} MiB"
