"""The judge's handle on a runner process: start it, send requests, collect replies.

If the runner dies or stops answering, the request in flight is answered with
``Status.RUNNER_DIED`` (charged to the check that was running) and a fresh runner
takes the rest.
"""

from __future__ import annotations

import collections
import itertools
import os
import queue
import signal
import subprocess
import threading
from dataclasses import replace
from typing import Any, Iterable, Iterator, Optional, TypeVar

from grader.judge.sandbox import (SANDBOX_OFF, Sandbox, runner_command, runner_env, sandbox_command,
                                  unprivileged_command)
from grader.protocol import READY, ProtocolError, Reply, Request, Status

#: seconds the judge waits beyond a request's own timeout before replacing the runner
WATCHDOG_GRACE = 15.0
STARTUP_TIMEOUT = 120.0

Key = TypeVar("Key")


class RunnerError(RuntimeError):
    """The runner could not be started at all (not a student's fault)."""


class Runner:
    """One runner process serving requests in order.

    :param sandbox: "auto" uses bubblewrap where it works and says once when it does not;
        "require" fails instead; "off" never uses it.
    """

    def __init__(self, command: Optional[list[str]] = None, env: Optional[dict[str, str]] = None,
                 sandbox: str = "auto"):
        self.notices: list[str] = []
        self.sandboxed = self.unprivileged = False
        self.sandbox: Optional[Sandbox] = None
        if command is None and sandbox != "off":
            self.sandbox = sandbox_command()
            self.sandboxed = self.sandbox is not None
            if self.sandbox is None:
                if sandbox == "require":
                    command = self._unprivileged("bubblewrap (bwrap) is not installed")
                else:
                    self.notices.append(SANDBOX_OFF.format(why="bubblewrap (bwrap) is not installed"))
            else:
                command = self.sandbox.command
                self.notices += self.sandbox.notices
        self.sandbox_mode = sandbox
        #: the runner cannot read the answers: bubblewrap, or an unprivileged user they are private from
        self.isolated = self.sandboxed or self.unprivileged
        #: whether requests still ask the runner to preload packages: not after a runner died serving one that
        #: did (a package whose import hangs or ends the process would end every fresh runner the same way)
        self.preloading = True
        self.command = command or runner_command()
        self.env = env if env is not None else runner_env()
        self.proc: Optional[subprocess.Popen] = None
        self.replies: "queue.Queue[Any]" = queue.Queue()
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
            # the sandbox's seccomp filter, which bwrap reads from a descriptor
            pass_fds=self.sandbox.pass_fds() if self.sandboxed and self.sandbox is not None else (),
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
        if first != READY:
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
            if self.sandboxed and self.sandbox_mode == "require":  # e.g. a container that forbids namespaces
                self.sandboxed = False
                self.command = self._unprivileged(f"bubblewrap could not start ({err[-300:] or 'no answer'})")
                self.isolated = True
                self.start()
                return
            raise RunnerError(f"the grading runner did not start: {err or 'no answer'}")
        self._ready = True

    def _unprivileged(self, why_no_sandbox: str) -> list[str]:
        """The runner as an unprivileged user, where the sandbox is required but cannot run."""
        command, why_not = unprivileged_command()
        if command is None:
            raise RunnerError(f"{why_no_sandbox}, and {why_not}")
        self.unprivileged = True
        self.notices.append(f"isolated without the sandbox ({why_no_sandbox}): the runner runs as an unprivileged "
                            "user that cannot read the answers")
        return command

    @staticmethod
    def _read(proc: subprocess.Popen, replies: "queue.Queue[Any]") -> None:
        """Queue READY, then each reply as (line, result bytes, output bytes); None when the runner is gone."""
        for line in proc.stdout:
            if line == READY:
                replies.put(line)
                continue
            try:
                result_size, output_size = Reply.sizes(line)
            except ProtocolError:
                break  # the stream cannot be trusted to line up again
            result = proc.stdout.read(result_size) if result_size is not None else None
            output = proc.stdout.read(output_size)
            if (result is not None and len(result) != result_size) or len(output) != output_size:
                break
            replies.put((line, result, output))
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

    @staticmethod
    def _writer(proc: subprocess.Popen, outbox: "queue.Queue[Optional[bytes]]") -> None:
        # A thread, so that a large request never blocks the judge while the runner is busy.
        while (line := outbox.get()) is not None:
            try:
                proc.stdin.write(line)
                proc.stdin.flush()
            except (BrokenPipeError, OSError, ValueError):
                return  # the runner died; the reader notices

    def run(self, requests: Iterable[tuple[Key, Request]], window: int = 3) -> Iterator[tuple[Key, Reply]]:
        """Yield ``(key, reply)`` in order, keeping up to ``window`` requests queued at the runner.

        ``requests`` is consumed lazily, after each reply, so a caller's generator can
        decide what to send next from what came back.
        """
        source = iter(requests)
        in_flight: collections.deque[tuple[Key, Request]] = collections.deque()

        def top_up() -> None:
            while len(in_flight) < window:
                item = next(source, None)
                if item is None:
                    return
                key, request = item
                request = replace(request, id=next(self._ids), preload=request.preload if self.preloading else ())
                in_flight.append((key, request))
                self._outbox.put(request.encode())

        self._ensure_running()
        top_up()
        while in_flight:
            key, request = in_flight.popleft()
            reply = self._reply_to(request)
            if reply.status == Status.RUNNER_DIED:  # charge this request; a fresh runner takes the rest
                self.preloading = self.preloading and not request.preload
                self.stop()
                self._ensure_running()
                if not self.preloading:  # in place: top_up appends to the same queue
                    stripped = [(k, replace(queued, preload=())) for k, queued in in_flight]
                    in_flight.clear()
                    in_flight.extend(stripped)
                for _, queued in in_flight:
                    self._outbox.put(queued.encode())
            yield key, reply
            top_up()

    def _reply_to(self, request: Request) -> Reply:
        try:
            line = self.replies.get(timeout=request.timeout + WATCHDOG_GRACE)
        except queue.Empty:
            line = None
        if not isinstance(line, tuple):
            return Reply.runner_died(request.id)
        try:
            reply = Reply.decode(*line)
        except ProtocolError:
            return Reply.runner_died(request.id)
        if reply.id != request.id or reply.status == Status.RUNNER_DIED:  # out of turn, or a claim only the judge makes
            return Reply.runner_died(request.id)
        return reply

    def _ensure_running(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            self.stop()
            self.start()
        self.wait_ready()

    def run_one(self, request: Request) -> Reply:
        return next(iter(self.run([(None, request)])))[1]
