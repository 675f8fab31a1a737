"""The runner's main loop: import torch once, then fork a fresh child for every request.

The zygote stays idle between requests and never runs student code. For each
:class:`~grader.protocol.Request` read from stdin it stages the submission's files in a fresh
folder, forks a child (:mod:`grader.runner.child`) that runs one probe and writes the probe's
plain-data result to a pipe, and answers with a :class:`~grader.protocol.Reply` on stdout: how
the child ended, then the result and the child's captured output. Then it kills whatever the
child left running.

The zygote holds no answer at any time: it never imports the reference, and the reference code
that comes with a request, the child's result and its output are moved between pipes and memory
files by the kernel (``splice``, ``sendfile``), never read into this process. Every child is a
copy of this process, so anything it had read, even freed, a later child could find.
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
from typing import Mapping, Optional

import torch

from grader import corpus, registry
from grader.config import RunConfig
from grader.protocol import FRAME, OUTPUT_KEPT, OUTPUT_LIMIT, READY, RESULT_LIMIT, Reply, Request, STAGED_PREFIX, Status
from grader.runner.child import HEADER, private_tmp_of, run_child
from grader.runner.integrity import Snapshot
from grader.runner.preloading import Preloader

_PR_SET_DUMPABLE, _PR_SET_CHILD_SUBREAPER = 4, 36
#: folders a run can write to inside the sandbox; emptied after every run
WRITABLE = ("/tmp", "/var/tmp", "/dev/shm")


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
    folder = Path(tempfile.mkdtemp(prefix=STAGED_PREFIX))
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


def _read_exact(fd: int, size: int) -> bytes:
    data = bytearray()
    while len(data) < size:
        chunk = os.read(fd, size - len(data))
        if not chunk:
            raise EOFError
        data += chunk
    return bytes(data)


#: Linux moves bytes between pipes and files inside the kernel; elsewhere (macOS, where there is no
#: sandbox and no grade counts) they pass through this process's memory instead
KERNEL_RELAY = sys.platform.startswith("linux") and all(hasattr(os, f) for f in ("splice", "memfd_create", "sendfile"))


def _move(source: int, target: int, count: int) -> int:
    """Up to ``count`` bytes from pipe ``source`` to ``target``; 0 at the end of the pipe."""
    if KERNEL_RELAY:
        return os.splice(source, target, count)
    data = os.read(source, min(count, 1 << 16))
    view = memoryview(data)
    while view:
        view = view[os.write(target, view):]
    return len(data)


def _memory_file(name: str) -> int:
    if KERNEL_RELAY:
        return os.memfd_create(name)
    handle, path = tempfile.mkstemp(prefix=f"{name}-")
    os.unlink(path)
    return handle


def _pass_on(source: int, target: int, size: int, spill: int) -> None:
    """Move ``size`` bytes from pipe ``source`` to ``target``, inside the kernel on Linux (``spill`` if it closed).

    The bytes never enter this process's memory, so no later child forked from it can find them there.
    """
    while size > 0:
        try:
            moved = _move(source, target, size)
        except BrokenPipeError:  # the child is gone: drain the rest so the next frame stays aligned
            target = spill
            continue
        if moved == 0:
            raise EOFError
        size -= moved


def _send_file(fd: int, offset: int, count: int) -> None:
    """Write ``count`` bytes of file ``fd`` from ``offset`` to stdout."""
    while count > 0:
        if KERNEL_RELAY:
            sent = os.sendfile(1, fd, offset, count)
        else:
            chunk = os.pread(fd, min(count, 1 << 16), offset)
            sent = os.write(1, chunk) if chunk else 0
        if sent == 0:
            raise EOFError
        offset, count = offset + sent, count - sent


def _mount_points() -> tuple[str, ...]:
    """Where something is mounted (the sandbox's read-only binds, some maybe inside /tmp)."""
    try:
        with open("/proc/self/mountinfo", encoding="utf-8", errors="replace") as f:
            return tuple(line.split()[4] for line in f if len(line.split()) > 4)
    except OSError:
        return ()


def _clear_folder(folder: str, mounts: tuple[str, ...] = ()) -> None:
    """Remove everything in ``folder`` (the sandbox's private /tmp): nothing a run wrote reaches the next.

    Mount points are left alone, and the folders leading to them kept: the sandbox made them (a virtual
    environment under /tmp, say), and walking a read-only tree after every run would cost seconds.
    """
    try:
        entries = os.listdir(folder)
    except OSError:
        return
    for name in entries:
        path = os.path.join(folder, name)
        if path in mounts:
            continue
        if any(m.startswith(path + "/") for m in mounts):
            _clear_folder(path, mounts)  # keep the way to the mount, empty the rest
            continue
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path, ignore_errors=True)
        else:
            try:
                os.unlink(path)
            except OSError:
                pass


class Zygote:
    """Serves requests one at a time.

    ``sweep`` (inside the sandbox): after each run kill every process of this uid and empty the
    writable folders, so that nothing one run leaves behind reaches the next.
    """

    def __init__(self, snapshot: Snapshot, sweep: bool):
        self.snapshot, self.sweep = snapshot, sweep
        self.meta_warm = False
        self.spill = os.open(os.devnull, os.O_WRONLY)
        self.mounts = _mount_points() if sweep else ()
        self.preloader = Preloader(snapshot)

    def serve_one(self, request: Request, reference_size: int) -> None:
        """Run one request whose reference bytes wait on stdin; write the reply to stdout."""
        # the grader's probe modules are imported here, once, rather than in every child; a pack's
        # module is built in the child from the source its request carries, never kept here
        if request.probe is not None and not request.probe_source:
            importlib.import_module(request.probe.partition(":")[0])
        folder = _stage(request.files)
        try:
            if request.preload:  # the installed packages it imports: imported here once, inherited by every child
                loaded = len(self.preloader.loaded)
                self.preloader.preload(request.preload, folder)
                if len(self.preloader.loaded) > loaded:
                    gc.freeze()  # as at start: the collector leaves the new objects alone in every child
            return self._supervise(request, reference_size, folder)
        finally:
            shutil.rmtree(folder, ignore_errors=True)
            shutil.rmtree(private_tmp_of(folder), ignore_errors=True)
            if self.sweep:
                for writable in WRITABLE:
                    _clear_folder(writable, self.mounts)

    def _supervise(self, request: Request, reference_size: int, folder: Path) -> None:
        if request.params.get("device") == "meta":
            self.warm_meta()
        result_r, result_w = os.pipe()
        output_r, output_w = os.pipe()
        reference_r, reference_w = os.pipe()
        started = time.monotonic()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - exercised through the judge's runner handle
            try:
                for fd in (result_r, output_r, reference_w, self.spill):
                    os.close(fd)
                run_child(request, folder, self.snapshot, result_w, output_w, reference_r)
            finally:
                os._exit(70)
        for fd in (result_w, output_w, reference_r):
            os.close(fd)
        _pass_on(0, reference_w, reference_size, self.spill)
        os.close(reference_w)
        if not self.meta_warm and request.timeout >= 20:
            self.warm_meta()  # while a long run goes on in the child, on the other core
        # What the child writes goes into memory files, not this process's memory.
        result_file = _memory_file("result")
        output_file = _memory_file("output")
        try:
            return self._collect(request, pid, started, result_r, output_r, result_file, output_file)
        finally:
            for fd in (result_r, output_r, result_file, output_file):
                os.close(fd)

    def _collect(self, request: Request, pid: int, started: float, result_r: int, output_r: int,
                 result_file: int, output_file: int) -> None:
        deadline = started + request.timeout
        received = printed = kept = 0
        status = Status.OK

        def complete() -> bool:
            if received < HEADER.size:
                return False
            return received >= HEADER.size + HEADER.unpack(os.pread(result_file, HEADER.size, 0))[0]

        def pump(fds: set, wait: float) -> None:
            nonlocal received, printed, kept
            ready, _, _ = select.select(list(fds), [], [], max(wait, 0))
            for fd in ready:
                if fd == output_r:
                    room = OUTPUT_KEPT - kept
                    moved = _move(fd, output_file if room > 0 else self.spill, room if room > 0 else 1 << 16)
                    printed += moved
                    kept += moved if room > 0 else 0
                else:
                    moved = _move(fd, result_file, 1 << 20)
                    received += moved
                if not moved:
                    fds.discard(fd)

        open_fds = {result_r, output_r}
        while result_r in open_fds and not complete():
            if time.monotonic() >= deadline:
                status = Status.TIMEOUT
            elif received > RESULT_LIMIT + HEADER.size:
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
        result_size = None
        if status == Status.OK:
            if complete():
                result_size = HEADER.unpack(os.pread(result_file, HEADER.size, 0))[0]
            else:
                status = Status.DIED
        reply = Reply(
            id=request.id, status=status, seconds=round(time.monotonic() - started, 4), printed=printed,
            cpu_seconds=round(usage.ru_utime + usage.ru_stime, 3), cpu_limit=request.limits.cpu_seconds,
            signal=os.WTERMSIG(wait_status) if os.WIFSIGNALED(wait_status) else None,
            exit_code=os.WEXITSTATUS(wait_status) if os.WIFEXITED(wait_status) else None,
        )
        line = reply.head(result_size, kept)
        while line:
            line = line[os.write(1, line):]
        if result_size is not None:
            _send_file(result_file, HEADER.size, result_size)
        _send_file(output_file, 0, kept)

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
    torch.manual_seed(0)  # its first call reads source lines into caches; every child seeds again


def preload(answer_dirs: Optional[list[str]] = None) -> Snapshot:
    """Import what every child needs, warm torch up, and snapshot what the runner relies on.

    Never the reference: each child receives the part of it that its run may hold.
    """
    for exercise in registry.EXERCISES:
        importlib.import_module(registry.checks_module(exercise.name))
    _warm_up()
    # the published training corpus (an input, not an answer): built here once, not in every child
    corpus.vocab_and_ids(corpus.corpus_spec(RunConfig()))
    return Snapshot(answer_dirs)


def main(argv: list[str] | None = None) -> None:
    """Serve framed requests from stdin.

    ``--sweep``: after each run kill every process of this uid and empty /tmp. ``--answers=DIR:DIR``:
    where the reference and the demo are on the grading machine (watched, never loaded).
    """
    argv = sys.argv[2:] if argv is None else argv
    sweep = "--sweep" in argv
    answers = [a.partition("=")[2] for a in argv if a.startswith("--answers=")]
    zygote = Zygote(preload(answers[0].split(os.pathsep) if answers and answers[0] else None), sweep)
    gc.freeze()  # keep the collector from touching (and copying) the zygote's objects in every child
    _prctl(_PR_SET_DUMPABLE, 0)  # children must not be able to read or trace the zygote's memory
    _prctl(_PR_SET_CHILD_SUBREAPER, 1)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    os.write(1, READY)
    while True:
        try:
            size = FRAME.unpack(_read_exact(0, FRAME.size))[0]
            request, reference_size = Request.decode(_read_exact(0, size))
        except EOFError:
            return
        zygote.serve_one(request, reference_size)


if __name__ == "__main__":
    main()
