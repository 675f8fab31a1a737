"""The judge's side of the runner: start it, send requests, collect plain-data replies.

A reply is trusted for nothing but its shape: the judge decodes the result bytes
with :mod:`grader.wire` and decides everything itself. If the runner dies or
stops answering, the request in flight is charged to the check that was running
and a fresh runner takes the rest.
"""

from __future__ import annotations

import base64
import collections
import itertools
import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Optional

import grader

#: the folder holding the ``grader`` package (and, in a checkout, ``reference``)
PACKAGE_ROOT = Path(grader.__file__).resolve().parent.parent
#: seconds the judge waits beyond a request's own timeout before replacing the runner
WATCHDOG_GRACE = 15.0
STARTUP_TIMEOUT = 120.0
PASSED_ENV = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "CUDA_VISIBLE_DEVICES", "LD_LIBRARY_PATH", "TMPDIR")


class RunnerError(RuntimeError):
    """The runner could not be started at all (not a student's fault)."""


@dataclass
class Reply:
    """How one probe ended, as seen by the judge."""

    status: str  # ok, timeout, died, runner_died, result_too_large
    result: Optional[bytes] = None
    output: str = ""
    seconds: float = 0.0
    signal: Optional[int] = None
    exit_code: Optional[int] = None
    raw: dict = field(default_factory=dict)


def runner_env() -> dict[str, str]:
    env = {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "LANG": "C.UTF-8",
        "HOME": os.environ.get("TMPDIR", "/tmp"),
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "OPENBLAS_NUM_THREADS": "1",
    }
    env.update({k: os.environ[k] for k in PASSED_ENV if k in os.environ})
    return env


def runner_command(sweep: bool = False) -> list[str]:
    # -I: no user site, no PYTHON* variables, no script folder on sys.path, so a
    # submission's torch.py cannot shadow torch. -B: write no bytecode.
    bootstrap = (
        "import sys; sys.path.insert(0, sys.argv[1]); "
        "from grader.runner import main; main()"
    )
    return [sys.executable, "-I", "-B", "-c", bootstrap, str(PACKAGE_ROOT)] + (["--sweep"] if sweep else [])


#: the unprivileged user runners run as when the grader is started as root
RUNNER_UID = 65534
#: folders hidden inside the sandbox (home folders, other users' temporary files)
HIDDEN = ("/root", "/home", "/tmp", "/var/tmp", "/run", "/mnt", "/media", "/srv")


def _needed_paths() -> list[str]:
    """Folders the runner must read: Python itself, installed packages, the grader."""
    paths = {sys.prefix, sys.base_prefix, sys.exec_prefix, str(PACKAGE_ROOT)}
    paths.update(p for p in sys.path if p)
    paths.add(os.path.dirname(os.path.realpath(sys.executable)))
    real = sorted({os.path.realpath(p) for p in paths if os.path.isdir(p)})
    hidden = [p for p in real if any(p == h or p.startswith(h + "/") for h in HIDDEN)]
    return [p for p in hidden if not any(p.startswith(q + "/") for q in hidden)]


def sandbox_command() -> Optional[list[str]]:
    """The runner command wrapped in bubblewrap, or None where bubblewrap is missing."""
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        return None
    as_root = os.geteuid() == 0
    if as_root:  # real namespaces without a user namespace, so privileges can really be dropped
        spaces = ["--unshare-ipc", "--unshare-pid", "--unshare-net", "--unshare-uts", "--unshare-cgroup-try"]
    else:
        spaces = ["--unshare-all"]
    args = [bwrap, *spaces, "--die-with-parent", "--new-session", "--ro-bind", "/", "/"]
    for hidden in HIDDEN:
        if os.path.isdir(hidden):
            args += ["--perms", "1777" if hidden.endswith("tmp") else "0755", "--tmpfs", hidden]
    args += ["--proc", "/proc", "--dev", "/dev"]
    made: set[str] = set()
    for path in _needed_paths():
        # folders bwrap creates on the way are 0700 by default: the runner's user must pass through
        parents = [str(p) for p in reversed(Path(path).parents) if str(p) not in ("/", *HIDDEN)]
        for parent in parents:
            if parent not in made:
                made.add(parent)
                args += ["--perms", "0755", "--dir", parent]
        args += ["--ro-bind", path, path]
    args += ["--chdir", "/tmp", "--"]
    if as_root:
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            return None
        args += [setpriv, f"--reuid={RUNNER_UID}", f"--regid={RUNNER_UID}", "--clear-groups",
                 "--inh-caps=-all", "--"]
    return args + runner_command(sweep=True)


SANDBOX_OFF = ("sandbox off: {why}; submissions still run in a separate process with time, memory and output "
               "limits, but can reach the network and write where your user can (install the 'bubblewrap' "
               "package on Linux for full isolation)")


class Runner:
    """One zygote process serving requests in order.

    :param sandbox: "auto" uses bubblewrap where it works and says once when it does not;
        "require" fails instead; "off" never uses it.
    """

    def __init__(self, command: Optional[list[str]] = None, env: Optional[dict[str, str]] = None,
                 sandbox: str = "auto"):
        self.notices: list[str] = []
        self.sandboxed = False
        if command is None and sandbox != "off":
            command = sandbox_command()
            self.sandboxed = command is not None
            if command is None:
                if sandbox == "require":
                    raise RunnerError("the sandbox was required but bubblewrap (bwrap) is not installed")
                self.notices.append(SANDBOX_OFF.format(why="bubblewrap (bwrap) is not installed"))
        self.sandbox_mode = sandbox
        self.command = command or runner_command()
        self.env = env if env is not None else runner_env()
        self.proc: Optional[subprocess.Popen] = None
        self.replies: "queue.Queue[Optional[bytes]]" = queue.Queue()
        self.starts = 0
        self._ready = False
        self._ids = itertools.count()  # unique across calls, so a stale reply is never mistaken

    # -- lifecycle ---------------------------------------------------------

    def start(self) -> None:
        self.launch()
        self.wait_ready()

    def launch(self) -> None:
        """Start the runner without waiting for it (it imports torch for a second or two)."""
        self.replies = queue.Queue()
        self.proc = subprocess.Popen(
            self.command,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=self.env,
            cwd="/",
            start_new_session=True,
        )
        self.starts += 1
        self._ready = False
        self._outbox: "queue.Queue[Optional[bytes]]" = queue.Queue()
        threading.Thread(target=self._read, args=(self.proc, self.replies), daemon=True).start()
        threading.Thread(target=self._writer, args=(self.proc, self._outbox), daemon=True).start()

    def wait_ready(self) -> None:
        if self._ready:
            return
        try:
            first = self.replies.get(timeout=STARTUP_TIMEOUT)
        except queue.Empty:
            first = None
        if not first or not json.loads(first).get("ready"):
            proc, err = self.proc, ""
            if proc is not None and proc.poll() is not None:
                err = proc.stderr.read().decode("utf-8", "replace")[-2000:].strip()
            self.stop()
            if self.sandboxed and self.sandbox_mode == "auto":
                # e.g. user namespaces forbidden here: degrade to process limits, once, and say so
                self.sandboxed = False
                self.command = runner_command()
                self.notices.append(SANDBOX_OFF.format(why=f"bubblewrap could not start ({err[-300:] or 'no answer'})"))
                self.start()
                return
            raise RunnerError(f"the grading runner did not start: {err or 'no answer'}")
        self._ready = True

    @staticmethod
    def _read(proc: subprocess.Popen, replies: "queue.Queue[Optional[bytes]]") -> None:
        for line in proc.stdout:
            replies.put(line)
        replies.put(None)

    def stop(self) -> None:
        if self.proc is None:
            return
        self._outbox.put(None)
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self.proc.wait()
        for stream in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            try:
                stream.close()
            except OSError:
                pass
        self.proc = None
        self._ready = False

    def __enter__(self) -> "Runner":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    # -- requests ----------------------------------------------------------

    def _write(self, request: dict) -> None:
        self._outbox.put(json.dumps(request).encode("utf-8") + b"\n")

    @staticmethod
    def _writer(proc: subprocess.Popen, outbox: "queue.Queue[Optional[bytes]]") -> None:
        # A thread, so that a large request never blocks the judge while the runner is busy.
        while (line := outbox.get()) is not None:
            try:
                proc.stdin.write(line)
                proc.stdin.flush()
            except (BrokenPipeError, OSError, ValueError):
                return  # the runner died; the reader notices

    def run(self, requests: Iterable[dict], window: int = 3) -> Iterator[tuple[dict, Reply]]:
        """Yield ``(request, reply)`` in order, keeping up to ``window`` requests queued at the runner.

        ``requests`` is consumed lazily, after each reply, so a caller's generator can
        decide what to send next from what came back.
        """
        source, ids = iter(requests), self._ids
        in_flight: collections.deque = collections.deque()

        def top_up() -> None:
            while len(in_flight) < window:
                request = next(source, None)
                if request is None:
                    return
                request = dict(request, id=next(ids))
                in_flight.append(request)
                self._write(request)

        self._ensure_running()
        top_up()
        while in_flight:
            request = in_flight[0]
            try:
                line = self.replies.get(timeout=float(request.get("timeout", 60)) + WATCHDOG_GRACE)
            except queue.Empty:
                line = None
            reply = _parse_reply(line) if line is not None else Reply("runner_died")
            if reply.status != "runner_died" and reply.raw.get("id") != request["id"]:
                reply = Reply("runner_died")
            in_flight.popleft()
            if reply.status == "runner_died":  # charge this request; a fresh runner takes the rest
                self.stop()
                self._ensure_running()
                for queued in in_flight:
                    self._write(queued)
            yield request, reply
            top_up()

    def _ensure_running(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            self.stop()
            self.start()
        self.wait_ready()

    def run_one(self, request: dict) -> Reply:
        return next(iter(self.run([request])))[1]


def _parse_reply(line: bytes) -> Reply:
    try:
        raw = json.loads(line)
        result = raw.get("result")
        return Reply(
            status=str(raw.get("status")),
            result=base64.b64decode(result) if result is not None else None,
            output=str(raw.get("output", "")),
            seconds=float(raw.get("seconds", 0.0)),
            signal=raw.get("signal"),
            exit_code=raw.get("exit_code"),
            raw=raw,
        )
    except (ValueError, TypeError, AttributeError):
        return Reply("runner_died")
