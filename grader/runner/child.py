"""What runs in a forked runner child: limits, the submission, one probe, the result.

The child is the only process where student code executes. It sets its limits, loads the
staged submission, runs the probe and writes the probe's plain-data result, framed by its
length, to the pipe the zygote gave it; then it exits.
"""

from __future__ import annotations

import importlib
import json
import os
import resource
import select
import struct
import sys
import tempfile
import time
import types
from pathlib import Path
from typing import Any, Callable, Optional

import torch

from grader import wire
from grader.registry import EXERCISE_HOOKS
from grader.protocol import Limits, Request
from grader.runner.context import NotImplementedHook, ProbeContext
from grader.runner.integrity import ReferenceGuard, Snapshot
from grader.runner.loader import LoadedSubmission, stand_in_module, isolate, load_submission
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


def run_child(request: Request, folder: Path, snapshot: Snapshot, result_fd: int, output_fd: int,
              reference_fd: int) -> None:
    """Runs in the forked child; never returns."""
    os.setsid()
    reference = read_reference(reference_fd)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.dup2(output_fd, 1)
    os.dup2(output_fd, 2)
    for fd in (devnull, output_fd, reference_fd):
        os.close(fd)
    os.closerange(3, result_fd)  # nothing of the zygote's stays open here but the result pipe
    os.closerange(result_fd + 1, 1 << 16)
    sys.stdin = open(os.devnull)
    sys.stdout = os.fdopen(1, "w", buffering=1, closefd=False)
    sys.stderr = os.fdopen(2, "w", buffering=1, closefd=False)
    private_tmp = private_tmp_of(folder)
    private_tmp.mkdir(mode=0o700, exist_ok=True)
    os.environ["TMPDIR"] = tempfile.tempdir = str(private_tmp)
    set_limits(request.limits)
    payload = run_probe(request, folder, snapshot, reference)
    out = os.fdopen(result_fd, "wb", closefd=False)
    out.write(HEADER.pack(len(payload)) + payload)
    out.flush()
    os._exit(0)


def private_tmp_of(folder: Path) -> Path:
    """The child's own TMPDIR, beside its staged files (the zygote removes both after the run)."""
    return folder.parent / (folder.name + "-tmp")


def read_reference(fd: int) -> dict[str, Callable]:
    """The reference code this run may hold, built into modules: hook name -> function."""
    chunks = []
    while chunk := os.read(fd, 1 << 16):
        chunks.append(chunk)
    raw = b"".join(chunks)
    return build_parts(json.loads(raw)) if raw else {}


def build_parts(parts: dict) -> dict[str, Callable]:
    """Execute the reference's modules (in order, so relative imports between them resolve)."""
    package_name = parts["package"]
    package = types.ModuleType(package_name, "the reference's code that this run may hold")
    package.__path__ = []
    sys.modules[package_name] = package
    hooks: dict[str, Callable] = {}
    for name, source in parts["modules"]:
        module = types.ModuleType(f"{package_name}.{name}")
        module.__package__ = package_name
        sys.modules[module.__name__] = module
        try:
            exec(compile(source, f"<reference {name}>", "exec"), vars(module))
        except Exception:  # noqa: BLE001 - a part that needs what this run may not hold is left out
            del sys.modules[module.__name__]
            continue
        setattr(package, name, module)
        hooks.update({hook: getattr(module, hook) for hook in EXERCISE_HOOKS if callable(getattr(module, hook, None))})
    return hooks


def loaded_hooks(loaded: LoadedSubmission) -> dict:
    """What a load-only request reports: which file implements which hook, and each file's problems."""
    return {"where": loaded.where, "problems": [list(p) for p in loaded.problems]}


def run_probe(request: Request, folder: Path, snapshot: Snapshot, reference: dict[str, Callable]) -> bytes:
    """Load the submission, run the request's probe and encode what came of it (never raises).

    :param reference: the reference's hooks this run may hold (never the graded one).
    """
    torch.set_num_threads(1)
    torch.manual_seed(0)
    guard = ReferenceGuard(snapshot.reference_dirs, folder)
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
        if request.separately:
            return wire.dumps({"value": load_separately(folder, float(request.params["per_file"]), request.timeout)})
        per_file = note_changes if request.track_files else None
        loaded = load_submission(folder, reference, after_import=per_file, stand_ins=request.stand_ins)
        # a file may change these at import; checks start from the defaults (more threads than one
        # only slow a run down on a shared machine, and can hang a forked child; anomaly detection
        # makes every training check several times slower)
        torch.set_default_dtype(torch.float32)
        torch.set_num_threads(1)
        torch.autograd.set_detect_anomaly(False)
        if request.probe is None:
            result: Any = {"value": loaded_hooks(loaded)}
        else:
            module_name, _, func_name = request.probe.partition(":")
            probe = getattr(probe_module(module_name, request.probe_source), func_name)
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


#: files imported side by side when a submission's files are loaded one by one
SIDE_BY_SIDE = 4
#: seconds to wait before forking again when no process could be started
FORK_RETRY = 0.05


def probe_module(name: str, source: str) -> types.ModuleType:
    """The probe's module: the grader's own by import, a pack's built afresh from the source the request carries."""
    if not source:
        return importlib.import_module(name)
    module = types.ModuleType(name)
    module.__file__ = f"<check pack {name}>"
    sys.modules[name] = module  # its functions' __module__ must resolve, e.g. for dataclasses
    exec(compile(source, module.__file__, "exec"), module.__dict__)
    return module


def load_separately(folder: Path, per_file: float, budget: float) -> dict:
    """Import each file in its own process, side by side, its siblings stubbed: how did each import end?

    Finds the files that hang or end the process at import in one ``per_file`` wait rather than
    one per file. Files not started within ``budget`` seconds are "not_tried".
    """
    names = sorted(p.name for p in folder.glob("*.py") if p.name != "__init__.py")
    stems = [Path(n).stem for n in names]
    deadline = time.monotonic() + max(budget - 1.0, 0.5)
    outcomes: dict[str, dict] = {}
    pending, running = list(names), {}

    def finish(fd: int, outcome: str) -> None:
        name, pid, started, said = running.pop(fd)
        if outcome == "timeout":
            os.kill(pid, 9)
        _, status = os.waitpid(pid, 0)
        os.close(fd)
        if outcome != "timeout":
            outcome = "ok" if said and os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0 else "died"
        outcomes[name] = {"outcome": outcome, "seconds": round(time.monotonic() - started, 3),
                          "exit_code": os.WEXITSTATUS(status) if os.WIFEXITED(status) and outcome == "died" else None,
                          "signal": os.WTERMSIG(status) if os.WIFSIGNALED(status) and outcome == "died" else None}

    while (pending or running) and time.monotonic() < deadline:
        while pending and len(running) < SIDE_BY_SIDE:
            name = pending.pop(0)
            read_end, write_end = os.pipe()
            try:
                pid = os.fork()
            except OSError:  # no process to spare now (a per-user limit on a busy machine): not the file's doing
                os.close(read_end)
                os.close(write_end)
                pending.insert(0, name)
                break
            if pid == 0:  # pragma: no cover - its outcome is what the parent reports
                os.close(read_end)
                _load_alone(folder, name, stems, write_end)
            os.close(write_end)
            running[read_end] = [name, pid, time.monotonic(), False]
        if not running:  # every fork was refused: nothing to wait for but a moment
            time.sleep(FORK_RETRY)
            continue
        now = time.monotonic()
        wait = min([deadline] + [started + per_file for _, _, started, _ in running.values()]) - now
        ready, _, _ = select.select(list(running), [], [], max(wait, 0))
        for fd in ready:
            if os.read(fd, 16):
                running[fd][3] = True
            else:
                finish(fd, "ended")
        now = time.monotonic()
        for fd in [fd for fd, (_, _, started, _) in running.items() if now >= started + per_file or now >= deadline]:
            finish(fd, "timeout")
    for fd in list(running):
        finish(fd, "timeout")
    outcomes.update({name: {"outcome": "not_tried"} for name in pending})
    return {"files": outcomes}


def _load_alone(folder: Path, name: str, stems: list[str], said_fd: int) -> None:
    """In a grandchild: import one file, its siblings replaced by stand-ins; say so if it returned."""
    try:
        for stem in stems:
            if stem != Path(name).stem and stem.isidentifier():
                sys.modules.setdefault(stem, stand_in_module(stem, {}))
        load_submission(folder, {}, only=[name])
        os.write(said_fd, b"imported")
    finally:
        os._exit(0)
