"""The runner's main loop: import torch once, then fork a fresh child for every request.

The zygote stays idle between requests and never runs student code. For each
:class:`~grader.protocol.Request` read from stdin it stages the submission's files in a fresh
folder, forks a child (:mod:`grader.runner.child`) that runs one probe and writes the probe's
plain-data result to a pipe, and answers with a :class:`~grader.protocol.Reply` on stdout: the
result, the child's captured output and how the child ended. Then it kills whatever the child
left running.
"""

from __future__ import annotations

import ctypes
import gc
import importlib
import os
import select
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Mapping

import torch

from grader import registry
from grader.plugins import reference_hooks
from grader.protocol import OUTPUT_KEPT, OUTPUT_LIMIT, READY, RESULT_LIMIT, Reply, Request, Status
from grader.runner.child import HEADER, run_child
from grader.runner.integrity import Snapshot

_PR_SET_DUMPABLE, _PR_SET_CHILD_SUBREAPER = 4, 36


def _prctl(option: int, value: int) -> None:
    try:
        ctypes.CDLL(None, use_errno=True).prctl(option, value, 0, 0, 0)
    except (OSError, AttributeError):
        pass


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _stage(files: Mapping[str, str]) -> Path:
    """Write the submission's files into a fresh private folder for one run."""
    folder = Path(tempfile.mkdtemp(prefix="submission-"))
    for name, source in files.items():
        if "/" in name or name.startswith("."):
            continue
        (folder / name).write_text(source, encoding="utf-8")
    return folder


def _sweep() -> None:
    """Kill every other process of this uid: leftovers that escaped the child's process group.

    Only used inside the sandbox's PID namespace, where that means the submission's processes alone.
    """
    try:
        os.kill(-1, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    while True:  # reap what was ours
        try:
            if os.waitpid(-1, os.WNOHANG) == (0, 0):
                break
        except ChildProcessError:
            break


def _children_of(pid: int) -> list[int]:
    kids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat", "rb") as f:
                    fields = f.read().rsplit(b")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                kids.append(int(entry))
    return kids


def _kill_descendants() -> None:
    # The zygote is a child subreaper: orphans of a run (double forks, setsid daemons) are
    # re-parented to it, not to init, so they are found here even without a PID namespace.
    if not os.path.isdir("/proc"):
        return
    me = os.getpid()
    for _ in range(100):  # each round kills what the previous round's kills re-parented to us
        kids = _children_of(me)
        if not kids:
            return
        for kid in kids:
            try:
                os.kill(kid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for kid in kids:
            try:
                os.waitpid(kid, 0)
            except ChildProcessError:
                pass


class Zygote:
    """Serves requests one at a time; ``sweep`` kills every process of this uid after each run."""

    def __init__(self, snapshot: Snapshot, sweep: bool):
        self.snapshot, self.sweep = snapshot, sweep
        self.meta_warm = False

    def serve_one(self, request: Request) -> Reply:
        if request.probe is not None:  # imported here, once, rather than in every child
            importlib.import_module(request.probe.partition(":")[0])
        folder = _stage(request.files)
        try:
            return self._supervise(request, folder)
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    def _supervise(self, request: Request, folder: Path) -> Reply:
        if request.params.get("device") == "meta":
            self.warm_meta()
        result_r, result_w = os.pipe()
        output_r, output_w = os.pipe()
        started = time.monotonic()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - exercised through the judge's runner handle
            try:
                os.close(result_r)
                os.close(output_r)
                run_child(request, folder, self.snapshot, result_w, output_w)
            finally:
                os._exit(70)
        os.close(result_w)
        os.close(output_w)
        if not self.meta_warm and request.timeout >= 20:
            self.warm_meta()  # while a long run goes on in the child, on the other core
        deadline = started + request.timeout
        result, output = bytearray(), bytearray()
        printed, status = 0, Status.OK

        def complete() -> bool:
            return len(result) >= HEADER.size and len(result) >= HEADER.size + HEADER.unpack_from(result)[0]

        def pump(fds: set, wait: float) -> None:
            nonlocal printed
            ready, _, _ = select.select(list(fds), [], [], max(wait, 0))
            for fd in ready:
                chunk = os.read(fd, 1 << 16)
                if not chunk:
                    fds.discard(fd)
                elif fd == output_r:
                    printed += len(chunk)
                    output.extend(chunk[:max(OUTPUT_KEPT - len(output), 0)])
                else:
                    result.extend(chunk)

        open_fds = {result_r, output_r}
        while result_r in open_fds and not complete():
            if time.monotonic() >= deadline:
                status = Status.TIMEOUT
            elif len(result) > RESULT_LIMIT + HEADER.size:
                status = Status.RESULT_TOO_LARGE
            elif printed > OUTPUT_LIMIT:
                status = Status.OUTPUT_FLOOD
            if status != Status.OK:
                break
            pump(open_fds, deadline - time.monotonic())
        # Collect what the child printed last; leftovers holding the pipe open get a moment only.
        open_fds.discard(result_r)
        drain_until = min(deadline, time.monotonic() + 0.2)
        while status == Status.OK and output_r in open_fds and time.monotonic() < drain_until and printed <= OUTPUT_LIMIT:
            pump(open_fds, drain_until - time.monotonic())
        _kill_group(pid)
        _, wait_status, usage = os.wait4(pid, 0)
        if self.sweep:
            _sweep()
        _kill_descendants()
        for fd in (result_r, output_r):
            os.close(fd)
        payload = None
        if status == Status.OK:
            if complete():
                size = HEADER.unpack_from(result)[0]
                payload = bytes(result[HEADER.size:HEADER.size + size])
            else:
                status = Status.DIED
        return Reply(
            id=request.id, status=status, result=payload,
            output=output.decode("utf-8", "replace") + ("\n[output truncated]" if printed > len(output) else ""),
            seconds=round(time.monotonic() - started, 4), printed=printed,
            cpu_seconds=round(usage.ru_utime + usage.ru_stime, 3), cpu_limit=request.limits.cpu_seconds,
            signal=os.WTERMSIG(wait_status) if os.WIFSIGNALED(wait_status) else None,
            exit_code=os.WEXITSTATUS(wait_status) if os.WIFEXITED(wait_status) else None,
        )

    def warm_meta(self) -> None:
        """The first operations on the 'meta' device load torch's Python meta kernels (about a second)."""
        if self.meta_warm:
            return
        a = torch.zeros(2, 2, device="meta")
        h = torch.tanh(a @ a + torch.randn(2, device="meta"))
        torch.cat([h, h]).sum()
        self.meta_warm = True


def _warm_up() -> None:
    """Pay torch's lazy first-use costs once, in the zygote, not in every child.

    One intra-op thread and tiny tensors only: a zygote whose thread pool has
    started would hang its forked children.
    """
    torch.set_num_threads(1)
    p = torch.zeros(2, requires_grad=True)
    (p * 2).sum().backward()
    optimizer = torch.optim.SGD([p], lr=0.1)
    optimizer.step()
    optimizer.zero_grad()


def preload() -> Snapshot:
    """Import what every child needs, warm torch up, and snapshot what the runner relies on."""
    for exercise in registry.EXERCISES:
        importlib.import_module(registry.checks_module(exercise.name))
    reference = reference_hooks()
    _warm_up()
    return Snapshot(reference)


def main(argv: list[str] | None = None) -> None:
    """Serve requests from stdin. ``--sweep``: after each run kill every process of this uid."""
    sweep = "--sweep" in (sys.argv[2:] if argv is None else argv)
    zygote = Zygote(preload(), sweep)
    gc.freeze()  # keep the collector from touching (and copying) the zygote's objects in every child
    _prctl(_PR_SET_DUMPABLE, 0)  # children must not be able to read or trace the zygote's memory
    _prctl(_PR_SET_CHILD_SUBREAPER, 1)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    out = sys.stdout.buffer
    out.write(READY)
    out.flush()
    for line in sys.stdin.buffer:
        if not line.strip():
            continue
        reply = zygote.serve_one(Request.decode(line))
        out.write(reply.encode())
        out.flush()


if __name__ == "__main__":
    main()
