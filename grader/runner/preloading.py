"""Importing, once and in the zygote, the installed packages a submission imports.

Every child is forked from the zygote, so a package the zygote has imported is already in the
child's ``sys.modules``: the submission's ``from d2l import torch as d2l`` then costs nothing instead
of seconds in every run. The judge names the modules (:attr:`grader.protocol.Request.preload`, read
from the submission's import statements, ``d2l`` and ``d2l.torch`` there); the zygote trusts none of
it blindly:

- only a module of an installed package in the environment's site-packages (never the standard
  library, never the grader or its answers, never the staged submission, which is not on the zygote's
  path anyway) is imported, and a dotted name only when it is a submodule there;
- the imports of one request share :data:`~grader.protocol.PRELOAD_SECONDS`; a package that raises or
  runs out of time is remembered and never tried again: the child imports it as usual and reports
  its own error;
- nothing the import prints or reads reaches the zygote's protocol pipes (stdin, stdout, stderr are
  the null device meanwhile);
- a package whose import rebinds what the runner relies on (the integrity snapshot's functions) is
  undone and left to the child, where the change is seen as the submission's own import's.

A package that starts threads at import keeps them in the zygote; a forked child has only the thread
that forked it. The usual pools (OpenMP, BLAS) are held to one thread by the runner's environment
and never started by the idle zygote, as for torch (see ``zygote._warm_up``).
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import io
import os
import signal
import sys
import time
from pathlib import Path
from typing import Iterable, Iterator, Optional

from grader.packages import installed_location, installed_origin
from grader.protocol import PRELOAD_LIMIT, PRELOAD_SECONDS
from grader.registry import ANSWER_PACKAGES
from grader.runner.integrity import Snapshot

#: never imported on a request's word: the grader itself, and the answers (a wheel installs them in site-packages)
NEVER_PRELOADED = ("grader", *ANSWER_PACKAGES)


class PreloadTimeout(Exception):
    """A preload's import ran past its share of time."""


def _out_of_time(signum: int, frame: object) -> None:
    raise PreloadTimeout


@contextlib.contextmanager
def _quiet_and_limited(seconds: float) -> Iterator[None]:
    """stdin, stdout and stderr on the null device (at the descriptors and in ``sys``), and an alarm after ``seconds``."""
    saved = {fd: os.dup(fd) for fd in (0, 1, 2)}
    null_in, null_out = os.open(os.devnull, os.O_RDONLY), os.open(os.devnull, os.O_WRONLY)
    previous = signal.signal(signal.SIGALRM, _out_of_time)
    try:
        os.dup2(null_in, 0)
        os.dup2(null_out, 1)
        os.dup2(null_out, 2)
        sink, stdin = io.StringIO(), sys.stdin
        with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
            sys.stdin = io.StringIO()
            signal.setitimer(signal.ITIMER_REAL, max(seconds, 0.01))
            try:
                yield
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)
                sys.stdin = stdin
    finally:
        signal.signal(signal.SIGALRM, previous)
        for stream in (sys.__stdout__, sys.__stderr__):
            try:
                stream.flush()  # what was written to the real streams goes to the null device, not the protocol
            except (OSError, ValueError, AttributeError):
                pass
        for fd, copy in saved.items():
            os.dup2(copy, fd)
            os.close(copy)
        os.close(null_in)
        os.close(null_out)


class Preloader:
    """The zygote's record of what it preloaded and what it will not try again."""

    def __init__(self, snapshot: Snapshot, seconds: float = PRELOAD_SECONDS):
        self.snapshot, self.seconds = snapshot, seconds
        #: names that were imported here, and names that failed, ran out of time or changed the runner's world
        self.loaded: set[str] = set()
        self.refused: set[str] = set()

    def preload(self, names: Iterable[str], staged: Path) -> None:
        """Import the modules of installed packages among ``names`` that are not imported yet (never raises).

        :param names: dotted module names (``d2l``, ``d2l.torch``); a name that is not a module is skipped.
        :param staged: the run's staged submission; a name that resolves inside it is never imported.
        """
        deadline = time.monotonic() + self.seconds
        for name in list(names)[:PRELOAD_LIMIT]:
            if not isinstance(name, str) or not all(part.isidentifier() for part in name.split(".")):
                continue
            top = name.partition(".")[0]
            if name in sys.modules or name in self.refused or top in self.refused:
                continue
            left = deadline - time.monotonic()
            if left <= 0:
                return  # not refused: a later request has its own time for it
            if _never(name) or not _installed_outside(installed_origin(top), staged):
                self.refused.add(top if top not in sys.modules else name)
                continue
            self._import(name, left, staged)

    def _import(self, name: str, seconds: float, staged: Path) -> None:
        before = set(sys.modules)
        try:
            with _quiet_and_limited(seconds):
                # a submodule's spec is found once its parents are imported (the package's own code runs for that)
                if "." in name and not _installed_outside(installed_location(importlib.util.find_spec(name)), staged):
                    raise ImportError(f"{name} is not a module of the installed package")
                importlib.import_module(name)
        except KeyboardInterrupt:
            raise
        except BaseException:  # noqa: BLE001 - SystemExit, a timeout: the child will import it and say why
            self.refused.add(name)
            top = name.partition(".")[0]
            if top not in sys.modules:  # the package itself failed: none of its modules is tried again
                self.refused.add(top)
            return
        if self.snapshot.changes():
            # it rebinds what the runner relies on: put that back and let each child import it afresh,
            # so the change is the submission's own import's (and seen as such) in its runs only
            for module in set(sys.modules) - before:
                sys.modules.pop(module, None)
            if self.snapshot.restore():
                os._exit(75)  # could not undo it: no later child may inherit it; the judge starts a fresh runner
            self.refused.add(name.partition(".")[0])
            return
        self.loaded.add(name)


def _never(name: str) -> bool:
    """The grader's own modules and the answers are never a third-party package, wherever they are installed."""
    return any(name == package or name.startswith(package + ".") for package in NEVER_PRELOADED)


def _installed_outside(origin: Optional[str], staged: Path) -> bool:
    """Whether ``origin`` is an installed package's location (see :func:`installed_origin`) outside the staged files."""
    return origin is not None and not Path(origin).resolve().is_relative_to(staged.resolve())
