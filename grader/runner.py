"""The runner: a separate process where student code runs, one forked child per check.

Started by the judge as ``python -I -m grader.runner`` (see :mod:`grader.pool`).
It imports torch once and then stays idle (a *zygote*): for each request read
from stdin it forks a child that loads the submission, runs one probe and
writes the probe's plain-data result to a pipe. The zygote relays that result,
the child's captured output and how the child ended, one JSON line per
request, on stdout. The zygote itself never runs student code.
"""

from __future__ import annotations

import base64
import ctypes
import gc
import importlib
import json
import os
import resource
import select
import shutil
import signal
import struct
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

#: how much of a child's stdout/stderr is kept for the report
OUTPUT_LIMIT = 64 * 1024
#: a child that prints more than this is stopped
OUTPUT_HARD_LIMIT = 1024 * 1024
#: largest result a child may send
RESULT_LIMIT = 64 * 1024 * 1024
HEADER = struct.Struct("<Q")


class NotImplementedHook(Exception):
    """The submission has no implementation of a hook a probe needs."""


class ProbeContext:
    """What a probe sees: the student's functions, the reference's, and helpers."""

    def __init__(self, loaded: Any, reference: dict, hook: str | None):
        self.loaded = loaded
        self.reference = reference
        self.hook = hook

    def student(self, name: str):
        func = self.loaded.hooks.get(name)
        if func is None:
            raise NotImplementedHook(name)
        return func


def _no_dumping() -> None:
    # Children must not be able to read or trace the zygote's memory.
    try:
        ctypes.CDLL(None, use_errno=True).prctl(4, 0, 0, 0, 0)  # PR_SET_DUMPABLE = 4
    except (OSError, AttributeError):
        pass


def _set_limits(limits: dict) -> None:
    pairs = {
        "address_space": resource.RLIMIT_AS,
        "cpu_seconds": resource.RLIMIT_CPU,
        "file_size": resource.RLIMIT_FSIZE,
        "processes": resource.RLIMIT_NPROC,
    }
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    for key, which in pairs.items():
        value = limits.get(key)
        if value is not None:
            # CPU: SIGXCPU at the soft limit, SIGKILL a second later even if that is ignored
            hard = int(value) + 1 if which == resource.RLIMIT_CPU else int(value)
            try:
                resource.setrlimit(which, (int(value), hard))
            except (ValueError, OSError):
                pass


def _child(request: dict, result_fd: int, output_fd: int) -> None:
    """Runs in the forked child; never returns."""
    os.setsid()
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.dup2(output_fd, 1)
    os.dup2(output_fd, 2)
    for fd in (devnull, output_fd):
        os.close(fd)
    sys.stdin = open(os.devnull)
    sys.stdout = os.fdopen(1, "w", buffering=1, closefd=False)
    sys.stderr = os.fdopen(2, "w", buffering=1, closefd=False)
    _set_limits(request.get("limits", {}))
    payload = _run_probe(request)
    out = os.fdopen(result_fd, "wb", closefd=False)
    out.write(HEADER.pack(len(payload)) + payload)
    out.flush()
    os._exit(0)


#: identities of the functions the runner relies on, taken once in the zygote before any student code
_SNAPSHOT: Any = None


def _run_probe(request: dict) -> bytes:
    import torch

    from grader import wire
    from grader.integrity import ReferenceGuard
    from grader.loader import describe_exception, isolate, load_submission
    from grader.plugins import reference_hooks

    torch.set_num_threads(1)
    torch.manual_seed(0)
    folder = Path(request["submission"])
    reference = reference_hooks()
    snapshot = _SNAPSHOT
    guard = ReferenceGuard(Path(reference["rnn"].__code__.co_filename).parent, folder)
    guard.install()
    integrity: list[dict] = []
    seen: set[str] = set()

    def note_changes(where: str | None) -> None:
        for name in snapshot.changes():
            if name not in seen:
                seen.add(name)
                integrity.append({"what": f"replaced {name}", "file": where})

    try:
        # Attributing changes to files costs a comparison per file; the load request does it once.
        per_file = note_changes if request.get("track_files") else None
        loaded = load_submission(folder, reference, after_import=per_file, only=request.get("only"),
                                 stand_ins=tuple(request.get("stand_ins", ())))
        torch.set_default_dtype(torch.float32)  # a file may change it at import; checks start from the default
        module_name, _, func_name = request["probe"].partition(":")
        probe = getattr(importlib.import_module(module_name), func_name)
        hook = request.get("hook")
        isolate(loaded, {hook} if hook else set(), reference)
        ctx = ProbeContext(loaded, reference, hook)
        result: Any = {"value": probe(ctx, **request.get("params", {}))}
    except NotImplementedHook as exc:
        result = {"not_implemented": str(exc)}
    except NotImplementedError as exc:
        result = {"not_implemented": str(exc)[:500] or request.get("hook") or "hook"}
    except KeyboardInterrupt:
        raise
    except BaseException as exc:  # noqa: BLE001 - whatever student code raised is reported
        result = {"error": describe_exception(exc, folder)}
        if isinstance(exc, MemoryError) or "can't allocate memory" in str(exc)[:2000]:
            result["limit"] = "memory"
    note_changes(None)
    events = integrity + guard.events
    try:
        with torch._C.DisableTorchFunction():
            return wire.dumps(dict(result, integrity=events))
    except Exception as exc:  # noqa: BLE001 - e.g. a returned object that is not plain data
        return wire.dumps({"error": f"the result could not be sent back: {exc}"[:2000], "integrity": events})


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
            _child(request, result_w, output_w)
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
    global _SNAPSHOT
    from grader.integrity import Snapshot

    _SNAPSHOT = Snapshot(reference_hooks())
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
