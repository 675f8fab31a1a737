"""The runner: a separate process where student code runs, one forked child per check.

Started by the judge with ``python -I`` (see :mod:`grader.pool`), inside the
sandbox where there is one. It imports torch once and then stays idle (a
*zygote*): for each request read from stdin it stages the submission's files in
a fresh folder and forks a child (:mod:`grader.child`) that runs one probe and
writes the probe's plain-data result to a pipe. The zygote relays that result,
the child's captured output and how the child ended, one JSON line per
request, on stdout, then kills whatever the child left running. The zygote
itself never runs student code.
"""

from __future__ import annotations

import base64
import ctypes
import gc
import importlib
import json
import os
import select
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from grader import child
from grader.child import HEADER, run_child

#: how much of a child's stdout/stderr is kept for the report
OUTPUT_LIMIT = 64 * 1024
#: a child that prints more than this is stopped
OUTPUT_HARD_LIMIT = 1024 * 1024
#: largest result a child may send
RESULT_LIMIT = 64 * 1024 * 1024


def _no_dumping() -> None:
    # Children must not be able to read or trace the zygote's memory.
    try:
        ctypes.CDLL(None, use_errno=True).prctl(4, 0, 0, 0, 0)  # PR_SET_DUMPABLE = 4
    except (OSError, AttributeError):
        pass


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _stage(files: dict) -> Path:
    """Write the submission's files into a fresh private folder for one check."""
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


def _become_subreaper() -> None:
    # Orphans of a check (double forks, setsid daemons) are re-parented to the zygote, not
    # to init, so _kill_descendants finds them even where there is no PID namespace.
    try:
        ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER = 36
    except (OSError, AttributeError):
        pass


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


def _serve_one(request: dict, sweep: bool) -> dict:
    folder = _stage(request.get("files", {}))
    request = dict(request, submission=str(folder))
    try:
        return _supervise(request, sweep)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _supervise(request: dict, sweep: bool) -> dict:
    if _needs_meta(request):
        _warm_meta()
    result_r, result_w = os.pipe()
    output_r, output_w = os.pipe()
    started = time.monotonic()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - exercised through the pool
        try:
            os.close(result_r)
            os.close(output_r)
            run_child(request, result_w, output_w)
        finally:
            os._exit(70)
    os.close(result_w)
    os.close(output_w)
    if not _meta_warm and float(request.get("timeout", 0)) >= 20:
        _warm_meta()  # while a long check runs in the child, on the other core
    deadline = started + float(request.get("timeout", 60))
    result, output = bytearray(), bytearray()
    printed, status = 0, "ok"

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
                output.extend(chunk[:max(OUTPUT_LIMIT - len(output), 0)])
            else:
                result.extend(chunk)

    open_fds = {result_r, output_r}
    while result_r in open_fds and not complete():
        if time.monotonic() >= deadline:
            status = "timeout"
        elif len(result) > RESULT_LIMIT + HEADER.size:
            status = "result_too_large"
        elif printed > OUTPUT_HARD_LIMIT:
            status = "output_flood"
        if status != "ok":
            break
        pump(open_fds, deadline - time.monotonic())
    # Collect what the child printed last; leftovers holding the pipe open get a moment only.
    open_fds.discard(result_r)
    drain_until = min(deadline, time.monotonic() + 0.2)
    while status == "ok" and output_r in open_fds and time.monotonic() < drain_until and printed <= OUTPUT_HARD_LIMIT:
        pump(open_fds, drain_until - time.monotonic())
    _kill_group(pid)
    _, wait_status, child_usage = os.wait4(pid, 0)
    if sweep:
        _sweep()
    _kill_descendants()
    for fd in (result_r, output_r):
        os.close(fd)
    reply: dict[str, Any] = {
        "id": request.get("id"),
        "status": status,
        "seconds": round(time.monotonic() - started, 4),
        "printed": printed,
        "output": output.decode("utf-8", "replace") + ("\n[output truncated]" if printed > len(output) else ""),
        "cpu_seconds": round(child_usage.ru_utime + child_usage.ru_stime, 3),
        "cpu_limit": request.get("limits", {}).get("cpu_seconds"),
    }
    if os.WIFSIGNALED(wait_status):
        reply["signal"] = os.WTERMSIG(wait_status)
    elif os.WIFEXITED(wait_status):
        reply["exit_code"] = os.WEXITSTATUS(wait_status)
    if status == "ok":
        if complete():
            size = HEADER.unpack_from(result)[0]
            reply["result"] = base64.b64encode(bytes(result[HEADER.size:HEADER.size + size])).decode("ascii")
        else:
            reply["status"] = "died"
    return reply


def _warm_up() -> None:
    """Pay torch's lazy first-use costs once, in the zygote, not in every child.

    One intra-op thread and tiny tensors only: a zygote whose thread pool has
    started would hang its forked children.
    """
    import torch

    torch.set_num_threads(1)
    p = torch.zeros(2, requires_grad=True)
    (p * 2).sum().backward()
    optimizer = torch.optim.SGD([p], lr=0.1)
    optimizer.step()
    optimizer.zero_grad()


_meta_warm = False


def _warm_meta() -> None:
    """The first operations on the 'meta' device load torch's Python meta kernels (about a second)."""
    global _meta_warm
    if _meta_warm:
        return
    import torch

    a = torch.zeros(2, 2, device="meta")
    h = torch.tanh(a @ a + torch.randn(2, device="meta"))
    torch.cat([h, h]).sum()
    _meta_warm = True


def _needs_meta(request: dict) -> bool:
    return request.get("params", {}).get("device") == "meta"


def main(argv: list[str] | None = None) -> None:
    """Serve requests from stdin. ``--sweep``: after each check kill every process of this uid."""
    sweep = "--sweep" in (sys.argv[2:] if argv is None else argv)
    # Preload what every child needs before any request arrives.
    import torch  # noqa: F401

    import grader.book  # noqa: F401
    import grader.engine  # noqa: F401
    import grader.fixtures  # noqa: F401
    import grader.integrity  # noqa: F401
    import grader.loader  # noqa: F401
    import grader.training  # noqa: F401
    import grader.wire  # noqa: F401
    from grader.plugins import BUILTIN_CHECKS, reference_hooks

    for name in BUILTIN_CHECKS:
        importlib.import_module(name)
    reference_hooks()
    _warm_up()
    from grader.integrity import Snapshot

    child.SNAPSHOT = Snapshot(reference_hooks())
    gc.freeze()  # keep the collector from touching (and copying) the zygote's objects in every child
    _no_dumping()
    _become_subreaper()
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    out = sys.stdout.buffer
    out.write(b'{"ready": true}\n')
    out.flush()
    for line in sys.stdin.buffer:
        if not line.strip():
            continue
        request = json.loads(line)
        for name in request.get("preload", ()):
            importlib.import_module(name)
        reply = _serve_one(request, sweep)
        out.write(json.dumps(reply).encode("utf-8") + b"\n")
        out.flush()


if __name__ == "__main__":
    main()
