"""A disk cache for the judge's seeded reference computations, so that a later ``grade`` starts faster.

The reference's side of a check is a pure function of its arguments and of the code that computes
it: the ``grader`` package, the reference solutions, torch, numpy and Python. An entry's key holds
all of them (:func:`code_key`), so editing the grader never serves a stale result.

Values are plain data (tensors, numbers, strings, lists, tuples, dicts with string keys), written
with ``torch.save`` and read with ``weights_only=True``: a file planted in the cache folder cannot
run code in the judge. Each file ends with the SHA-256 of the rest; a missing, damaged or
unreadable entry is computed again and rewritten, and a folder that cannot be written is simply
not used. A full set of entries takes about 50 KB; the folders of the newest
:data:`KEEP_CODE_VERSIONS` code versions are kept.

The cache is off until :func:`configure` turns it on: the runner imports the same modules (every
run reads the corpus), and a run must neither write its inputs to disk (a secret seed's inputs are
per submission) nor read entries another submission could have left there. Importing this module
imports no torch: the command line reads a corpus before it starts the runner.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import io
import os
import platform
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable, Literal, Optional, TypeVar, Union

__all__ = ["Uncacheable", "configure", "directory", "default_directory", "code_key", "entry_key", "cached"]

#: changes whenever the layout or the encoding of entries changes
FORMAT = "1"
#: the folder, inside the cache's, that holds one folder of entries per code version
ENTRIES = "references"
#: code versions whose entries are kept; older folders go when a new one starts
KEEP_CODE_VERSIONS = 3
#: larger files are not read (no entry comes near this)
MAX_ENTRY_BYTES = 16 * 1024 * 1024

_CODE_KEY_CHARS = 24
Function = TypeVar("Function", bound=Callable[..., Any])

#: a folder, None for the default folder, False for off
_setting: Union[Path, None, Literal[False]] = False


class Uncacheable(TypeError):
    """An argument or a value the cache cannot key or store exactly."""


def configure(directory: Union[Path, str, None, Literal[False]] = None) -> None:
    """Turn the cache on, in ``directory`` or (None) in :func:`default_directory`; False turns it off.

    :param directory: where entries go; created when the first entry is written.
    """
    global _setting
    _setting = False if directory is False else None if directory is None else Path(directory)


def default_directory() -> Path:
    """``$GRADER_CACHE_DIR``, else ``$XDG_CACHE_HOME/rnn-grader``, else ``~/.cache/rnn-grader``."""
    if os.environ.get("GRADER_CACHE_DIR"):
        return Path(os.environ["GRADER_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "rnn-grader"


def directory() -> Optional[Path]:
    """The folder entries are read from and written to now; None while the cache is off."""
    if _setting is False:
        return None
    return default_directory() if _setting is None else _setting


# ---------------------------------------------------------------- keys


def _source_roots() -> list[Path]:
    """The ``grader`` package and every folder the reference (or the demo) is imported from."""
    import grader
    from grader.registry import answer_dirs

    package = Path(grader.__file__).resolve().parent
    others = [Path(d) for d in answer_dirs() if not Path(d).is_relative_to(package)]
    return [package, *others]


def _hash_sources(roots: list[Path], digest: Any) -> None:
    for number, root in enumerate(roots):
        for folder, subfolders, files in os.walk(root):
            subfolders[:] = sorted(d for d in subfolders if d != "__pycache__")
            for name in sorted(f for f in files if f.endswith(".py")):
                path = Path(folder) / name
                digest.update(f"{number}/{path.relative_to(root).as_posix()}\0".encode())
                digest.update(path.read_bytes() + b"\0")


@functools.lru_cache(maxsize=1)
def code_key() -> str:
    """What every entry depends on besides its arguments: versions, machine and the source, hashed once."""
    import numpy
    import torch

    import grader

    digest = hashlib.sha256()
    for part in (FORMAT, grader.__version__, torch.__version__, numpy.__version__, sys.version, platform.machine(),
                 torch.backends.cpu.get_cpu_capability()):
        digest.update(f"{part}\0".encode())
    _hash_sources(_source_roots(), digest)
    return digest.hexdigest()[:_CODE_KEY_CHARS]


def _canonical(value: Any) -> str:
    """A text that only this value (type included) gives, the same in every process."""
    kind = type(value)
    if value is None or kind is bool:
        return repr(value)
    if kind is int:
        return f"i{value}"
    if kind is float:
        return f"f{value.hex()}"  # exact, and -0.0, inf and nan included
    if kind is str:
        return "s" + repr(value)
    if kind in (list, tuple):
        return ("l[" if kind is list else "t[") + ",".join(map(_canonical, value)) + "]"
    if kind is dict and all(type(k) is str for k in value):
        return "d{" + ",".join(f"{k!r}:{_canonical(value[k])}" for k in sorted(value)) + "}"
    raise Uncacheable(f"cannot key a {kind.__name__} argument exactly")


def entry_key(function: Callable[..., Any], *args: Any, **kwargs: Any) -> str:
    """The name of ``function(*args, **kwargs)``'s entry; raises :class:`Uncacheable` for arguments that are not plain."""
    function = inspect.unwrap(function)
    bound = inspect.signature(function).bind(*args, **kwargs)
    bound.apply_defaults()
    material = _canonical([f"{function.__module__}.{function.__qualname__}", dict(bound.arguments)])
    return hashlib.sha256(material.encode()).hexdigest()


# ---------------------------------------------------------------- values


def _check_plain(value: Any, where: str = "value") -> None:
    import torch

    if value is None or type(value) in (bool, int, float, str, bytes):
        return
    if isinstance(value, torch.Tensor) and type(value) is torch.Tensor and value.layout == torch.strided:
        return
    if type(value) in (list, tuple):
        for i, item in enumerate(value):
            _check_plain(item, f"{where}[{i}]")
        return
    if type(value) is dict and all(type(k) is str for k in value):
        for k, item in value.items():
            _check_plain(item, f"{where}[{k!r}]")
        return
    raise Uncacheable(f"{where} is a {type(value).__name__}, not plain data: give the cache to_plain and from_plain")


_MISSING = object()
_DIGEST_BYTES = 32


def _sealed(body: bytes) -> bytes:
    """The body followed by its SHA-256: a file damaged anywhere is seen before it is unpickled."""
    return body + hashlib.sha256(body).digest()


def _read(path: Path, key: str) -> Any:
    """The entry's plain value, or _MISSING for a file that is absent, too large, damaged or not this entry."""
    import torch

    try:
        with open(path, "rb") as file:
            data = file.read(MAX_ENTRY_BYTES + 1)
        body, digest = data[:-_DIGEST_BYTES], data[-_DIGEST_BYTES:]
        if len(data) > MAX_ENTRY_BYTES or _sealed(body)[-_DIGEST_BYTES:] != digest:
            return _MISSING
        entry = torch.load(io.BytesIO(body), map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001 - whatever is wrong with the file, computing again is the answer
        return _MISSING
    if type(entry) is not dict or entry.get("key") != key or "value" not in entry:
        return _MISSING
    return entry["value"]


def _write(path: Path, key: str, value: Any) -> None:
    """Write atomically (a reader sees the old entry or the whole new one); say nothing when it cannot."""
    import torch

    body = io.BytesIO()
    torch.save({"key": key, "value": value}, body)
    try:
        if not path.parent.is_dir():
            path.parent.mkdir(parents=True, exist_ok=True)
            _prune(path.parent)
        handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=".entry-", suffix=".tmp")
        try:
            with os.fdopen(handle, "wb") as file:
                file.write(_sealed(body.getvalue()))
            os.replace(temporary, path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
    except OSError:  # a folder that cannot be written (or a full disk) only costs the speed-up
        pass


def _prune(current: Path) -> None:
    """Remove the entries of older code versions, keeping the newest few (other installs may share the folder)."""
    try:
        versions = [(p.stat().st_mtime, p) for p in current.parent.iterdir() if p != current and _is_code_key(p.name)]
    except OSError:
        return
    for _, old in sorted(versions, reverse=True)[KEEP_CODE_VERSIONS - 1:]:
        shutil.rmtree(old, ignore_errors=True)


def _is_code_key(name: str) -> bool:
    """Only folders this module named are ever removed, whatever else the cache folder holds."""
    return len(name) == _CODE_KEY_CHARS and all(c in "0123456789abcdef" for c in name)


# ---------------------------------------------------------------- the decorator


def cached(to_plain: Optional[Callable[[Any], Any]] = None,
           from_plain: Optional[Callable[[Any], Any]] = None) -> Callable[[Function], Function]:
    """Keep a pure, seeded function's results on disk while the cache is on.

    Put an in-memory ``functools.lru_cache`` in front of it: a lookup reads a file. Arguments must be
    plain (None, bool, int, float, str, lists, tuples, dicts with string keys); with others the
    function is simply called. A file given by path must be passed by its content, never its path.

    :param to_plain: turns a result into plain data (e.g. a model into its parameter tensors).
    :param from_plain: rebuilds the result from that data, equal to the one computed.
    """
    def decorate(function: Function) -> Function:
        @functools.wraps(function)
        def lookup(*args: Any, **kwargs: Any) -> Any:
            folder = directory()
            if folder is None:
                return function(*args, **kwargs)
            try:
                key = entry_key(function, *args, **kwargs)
            except Uncacheable:
                return function(*args, **kwargs)
            path = folder / ENTRIES / code_key() / f"{key}.pt"
            stored = _read(path, key)
            if stored is not _MISSING:
                try:
                    return from_plain(stored) if from_plain else stored
                except Exception:  # noqa: BLE001 - an entry that does not rebuild is computed again
                    pass
            value = function(*args, **kwargs)
            plain = to_plain(value) if to_plain else value
            _check_plain(plain, f"the result of {function.__qualname__}")
            _write(path, key, plain)
            return value

        return lookup  # type: ignore[return-value]

    return decorate
