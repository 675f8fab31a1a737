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
import importlib
import json
import os
import resource
import select
import signal
import struct
import sys
import time
from pathlib import Path
from typing import Any

#: how much of a child's stdout/stderr is kept for the report
OUTPUT_LIMIT = 64 * 1024
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
            try:
                resource.setrlimit(which, (int(value), int(value)))
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


def _run_probe(request: dict) -> bytes:
    import torch

    from grader import wire
    from grader.loader import describe_exception, isolate, load_submission
    from grader.plugins import reference_hooks

    torch.set_num_threads(1)
    torch.manual_seed(0)
    folder = Path(request["submission"])
    try:
        reference = reference_hooks()
        loaded = load_submission(folder, reference)
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
    try:
        return wire.dumps(result)
    except Exception as exc:  # noqa: BLE001 - e.g. a returned object that is not plain data
        return wire.dumps({"error": f"the result could not be sent back: {exc}"[:2000]})


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _serve_one(request: dict) -> dict:
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
    deadline = started + float(request.get("timeout", 60))
    result, output = bytearray(), bytearray()
    truncated, status = False, "ok"

    def complete() -> bool:
        return len(result) >= HEADER.size and len(result) >= HEADER.size + HEADER.unpack_from(result)[0]

    def pump(fds: set, wait: float) -> None:
        nonlocal truncated
        ready, _, _ = select.select(list(fds), [], [], max(wait, 0))
        for fd in ready:
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                fds.discard(fd)
            elif fd == output_r:
                room = max(OUTPUT_LIMIT - len(output), 0)
                output.extend(chunk[:room])
                truncated = truncated or len(chunk) > room
            else:
                result.extend(chunk)

    open_fds = {result_r, output_r}
    while result_r in open_fds and not complete():
        if time.monotonic() >= deadline:
            status = "timeout"
            break
        if len(result) > RESULT_LIMIT + HEADER.size:
            status = "result_too_large"
            break
        pump(open_fds, deadline - time.monotonic())
    # Collect what the child printed last; leftovers holding the pipe open get a moment only.
    open_fds.discard(result_r)
    drain_until = min(deadline, time.monotonic() + 0.2)
    while status == "ok" and output_r in open_fds and time.monotonic() < drain_until:
        pump(open_fds, drain_until - time.monotonic())
    _kill_group(pid)
    _, wait_status = os.waitpid(pid, 0)
    for fd in (result_r, output_r):
        os.close(fd)
    reply: dict[str, Any] = {
        "id": request.get("id"),
        "status": status,
        "seconds": round(time.monotonic() - started, 4),
        "output": output.decode("utf-8", "replace") + ("\n[output truncated]" if truncated else ""),
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
    """Pay torch's lazy first-use costs (meta kernels, optimizers) once, not in every child.

    One intra-op thread and tiny tensors only: a zygote whose thread pool has
    started would hang its forked children.
    """
    import torch

    torch.set_num_threads(1)
    a = torch.zeros(2, 2, device="meta")
    torch.tanh(a @ a + torch.randn(2, device="meta")).sum()
    p = torch.zeros(2, requires_grad=True)
    (p * 2).sum().backward()
    optimizer = torch.optim.SGD([p], lr=0.1)
    optimizer.step()
    optimizer.zero_grad()


def main() -> None:
    # Preload what every child needs before any request arrives.
    import torch  # noqa: F401

    import grader.book  # noqa: F401
    import grader.loader  # noqa: F401
    import grader.wire  # noqa: F401
    from grader.plugins import BUILTIN_CHECKS, reference_hooks

    for name in BUILTIN_CHECKS:
        importlib.import_module(name)
    reference_hooks()
    _warm_up()
    _no_dumping()
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
        reply = _serve_one(request)
        out.write(json.dumps(reply).encode("utf-8") + b"\n")
        out.flush()


if __name__ == "__main__":
    main()
