"""What runs in a forked runner child: limits, the submission, one probe, the result.

The child is the only process where student code executes. It sets its limits, loads the
staged submission, runs the probe and writes the probe's plain-data result, framed by its
length, to the pipe the zygote gave it; then it exits.
"""

from __future__ import annotations

import importlib
import os
import resource
import struct
import sys
from pathlib import Path
from typing import Any, Optional

import torch

from grader import wire
from grader.plugins import reference_hooks
from grader.protocol import Limits, Request
from grader.runner.context import NotImplementedHook, ProbeContext
from grader.runner.integrity import ReferenceGuard, Snapshot
from grader.runner.loader import LoadedSubmission, isolate, load_submission
from grader.runner.tracebacks import describe_exception, raised_by_student

#: the result frame: an 8-byte little-endian length, then that many bytes of wire JSON
HEADER = struct.Struct("<Q")

_RLIMITS = {
    "address_space": resource.RLIMIT_AS,
    "cpu_seconds": resource.RLIMIT_CPU,
    "file_size": resource.RLIMIT_FSIZE,
    "processes": resource.RLIMIT_NPROC,
}


def set_limits(limits: Limits) -> None:
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    for key, which in _RLIMITS.items():
        value = getattr(limits, key)
        if value is not None:
            # CPU: SIGXCPU at the soft limit, SIGKILL a second later even if that is ignored
            hard = int(value) + 1 if which == resource.RLIMIT_CPU else int(value)
            try:
                resource.setrlimit(which, (int(value), hard))
            except (ValueError, OSError):
                pass


def run_child(request: Request, folder: Path, snapshot: Snapshot, result_fd: int, output_fd: int) -> None:
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
    set_limits(request.limits)
    payload = run_probe(request, folder, snapshot)
    out = os.fdopen(result_fd, "wb", closefd=False)
    out.write(HEADER.pack(len(payload)) + payload)
    out.flush()
    os._exit(0)


def loaded_hooks(loaded: LoadedSubmission) -> dict:
    """What a load-only request reports: which file implements which hook, and each file's problems."""
    return {"where": loaded.where, "problems": [list(p) for p in loaded.problems]}


def run_probe(request: Request, folder: Path, snapshot: Snapshot) -> bytes:
    """Load the submission, run the request's probe and encode what came of it (never raises)."""
    torch.set_num_threads(1)
    torch.manual_seed(0)
    reference = reference_hooks()
    guard = ReferenceGuard(Path(reference["rnn"].__code__.co_filename).parent, folder)
    guard.install()
    integrity: list[dict] = []
    seen: set[str] = set()

    def note_changes(where: Optional[str]) -> None:
        for name in snapshot.changes():
            if name not in seen:
                seen.add(name)
                integrity.append({"what": f"replaced {name}", "file": where})

    try:
        # Attributing changes to files costs a comparison per file; the load request does it once.
        per_file = note_changes if request.track_files else None
        only = list(request.only) if request.only is not None else None
        loaded = load_submission(folder, reference, after_import=per_file, only=only, stand_ins=request.stand_ins)
        torch.set_default_dtype(torch.float32)  # a file may change it at import; checks start from the default
        if request.probe is None:
            result: Any = {"value": loaded_hooks(loaded)}
        else:
            module_name, _, func_name = request.probe.partition(":")
            probe = getattr(importlib.import_module(module_name), func_name)
            isolate(loaded, {request.hook} if request.hook else set(), reference)
            ctx = ProbeContext(loaded, reference, request.hook)
            result = {"value": probe(ctx, **request.params)}
    except NotImplementedHook as exc:
        result = {"not_implemented": str(exc)}
    except NotImplementedError as exc:
        if raised_by_student(exc, folder):  # the skeleton's own `raise NotImplementedError`
            result = {"not_implemented": str(exc)[:500] or request.hook or "hook"}
        else:  # torch raised it inside student code, e.g. an operation the meta device lacks
            result = {"error": describe_exception(exc, folder)}
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
