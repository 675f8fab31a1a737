"""What the judge and the runner say to each other: typed requests and replies.

The judge sends a :class:`Request` for every run of student code, as a frame: its length, its JSON,
then the reference code the run may hold. The runner answers each with a :class:`Reply`, in order: a
JSON line with the sizes of the result and output bytes that follow it. Those bytes pass through the
runner's zygote by the kernel only (see :mod:`grader.runner.zygote`). A reply is believed for nothing
but its shape: the probe's result travels as :mod:`grader.wire` bytes that the judge decodes strictly,
and every verdict is the judge's own. Both sides import this module and nothing else of each other's.
"""

from __future__ import annotations

import enum
import json
import math
import re
import struct
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Mapping, Optional

from grader.wire import valid_text

MiB = 1 << 20
#: the start of the name of the fresh folder each run's files are staged in (runner side)
STAGED_PREFIX = "submission-"
_STAGED_PATH = re.compile(rf"(?:/[^/\s'\"]+)*/{STAGED_PREFIX}[^/\s'\"]+/")


def without_staging(text: str) -> str:
    """``text`` with the paths of a run's staging folder left out: ``/tmp/submission-x1/rnn.py:3`` is
    ``rnn.py:3``, the file as the student knows it (a warning printed by their code names the staged copy)."""
    return _STAGED_PATH.sub("", text) if STAGED_PREFIX in text else text


class ProtocolError(ValueError):
    """A line that is not a well-formed request or reply."""


class Status(str, enum.Enum):
    """How a run of student code ended, as the runner saw it (RUNNER_DIED is the judge's own)."""

    #: the probe finished and its complete result came back
    OK = "ok"
    #: the run used up its wall time and was killed
    TIMEOUT = "timeout"
    #: the child ended (exit, signal) without sending a complete result
    DIED = "died"
    #: the result grew past :data:`RESULT_LIMIT`
    RESULT_TOO_LARGE = "result_too_large"
    #: the child printed more than :data:`OUTPUT_LIMIT`
    OUTPUT_FLOOD = "output_flood"
    #: the runner itself stopped answering or answered out of turn
    RUNNER_DIED = "runner_died"


#: largest result a child may send back
RESULT_LIMIT = 64 * MiB
#: a child that prints more than this is stopped
OUTPUT_LIMIT = 1 * MiB
#: how much of a child's output is kept for the report
OUTPUT_KEPT = 64 * 1024
#: largest reference code a request may carry
REFERENCE_LIMIT = 4 * MiB
#: a frame's length prefix: 8 bytes, little-endian
FRAME = struct.Struct("<Q")
#: most modules a request may ask the runner to preload
PRELOAD_LIMIT = 32
#: seconds the runner spends at most importing one request's preloads (well within the judge's patience
#: for a reply; a package not imported by then is left to the child, which imports it as usual)
PRELOAD_SECONDS = 12.0


@dataclass(frozen=True)
class Limits:
    """Limits on every child process; the verdict names the one that was hit."""

    address_space: int = 4 << 30
    file_size: int = 16 * MiB
    processes: int = 64
    #: CPU seconds; a run may use one more than its wall timeout
    cpu_seconds: Optional[int] = None

    def for_timeout(self, timeout: float) -> "Limits":
        return replace(self, cpu_seconds=int(timeout) + 1)


DEFAULT_LIMITS = Limits()


@dataclass(frozen=True)
class Request:
    """One run of student code: load the submission, then run one probe (or only load it)."""

    #: the submission's files, name -> source; staged in a fresh private folder for this run
    files: Mapping[str, str]
    timeout: float
    limits: Limits = DEFAULT_LIMITS
    #: ``"module:function"`` of the probe; None loads the submission and reports what it implements
    probe: Optional[str] = None
    #: the student hook this run grades; the reference stands in for every other one
    hook: Optional[str] = None
    #: keyword arguments of the probe, plain JSON data
    params: Mapping[str, Any] = field(default_factory=dict)
    #: the probe module's source when it is not the grader's own (a check pack): the child builds the
    #: module from it, so a pack needs no path in the sandbox and is seen only in its own runs
    probe_source: str = ""
    #: module names served by stand-ins in place of files that hang or end the process at import
    stand_ins: tuple[str, ...] = ()
    #: attribute what the files change in the grader's world to the file that changed it
    track_files: bool = False
    #: load each file on its own, side by side, and report how each import ended (finds files that hang)
    separately: bool = False
    #: installed third-party packages the submission imports (read from its source by the judge): the
    #: zygote imports them once, before forking, so that no child pays for importing them again
    preload: tuple[str, ...] = ()
    #: the reference's code this run may hold (everything but the graded hook's answer), sent after
    #: the request's frame and passed to the child without entering the zygote's memory
    reference: bytes = field(default=b"", repr=False)
    #: set by the judge's runner handle; a reply carries it back
    id: int = -1

    def encode(self) -> bytes:
        """A frame: the request's JSON, its length first, then the reference's bytes."""
        data = asdict(self)
        del data["reference"]
        data["files"], data["params"] = dict(self.files), dict(self.params)
        data["reference_size"] = len(self.reference)
        body = json.dumps(data).encode("utf-8")
        return FRAME.pack(len(body)) + body + self.reference

    @classmethod
    def decode(cls, body: bytes) -> tuple["Request", int]:
        """The request in a frame's JSON, and how many reference bytes follow it."""
        try:
            data = json.loads(body)
            size = int(data.pop("reference_size", 0))
            data["limits"] = Limits(**data["limits"])
            data["stand_ins"] = tuple(data.get("stand_ins", ()))
            data["preload"] = tuple(str(name) for name in data.get("preload", ()))
            if size < 0 or size > REFERENCE_LIMIT:
                raise ValueError(f"reference of {size} bytes")
            return cls(**data), size
        except (ValueError, TypeError, KeyError) as exc:
            raise ProtocolError(f"malformed request: {exc}") from None


@dataclass(frozen=True)
class Reply:
    """How one run ended: status, the probe's encoded result, what the child printed, its resources."""

    id: int
    status: Status
    #: the probe's result as :mod:`grader.wire` bytes (only when the status is OK)
    result: Optional[bytes] = None
    #: what the child printed, cut to :data:`OUTPUT_KEPT`
    output: str = ""
    seconds: float = 0.0
    #: bytes the child printed in all
    printed: int = 0
    cpu_seconds: float = 0.0
    cpu_limit: Optional[int] = None
    #: the signal that ended the child, or its exit code
    signal: Optional[int] = None
    exit_code: Optional[int] = None

    @classmethod
    def runner_died(cls, request_id: int = -1) -> "Reply":
        return cls(request_id, Status.RUNNER_DIED)

    def head(self, result_size: Optional[int], output_size: int) -> bytes:
        """The reply's line; ``result_size`` bytes of result (None: no result) and ``output_size``
        bytes of output follow it, written straight from the child's buffers."""
        data = asdict(self)
        del data["result"], data["output"]
        data.update(status=self.status.value, result_size=result_size, output_size=output_size)
        return json.dumps(data).encode("utf-8") + b"\n"

    @staticmethod
    def sizes(line: bytes) -> tuple[Optional[int], int]:
        """How many bytes of result and of output follow a reply's line (bounded by the limits)."""
        try:
            data = json.loads(line, parse_int=_parse_int, parse_constant=_reject_constant)
            result_size, output_size = data.get("result_size"), int(data.get("output_size", 0))
            if result_size is not None:
                result_size = int(result_size)
                if not 0 <= result_size <= RESULT_LIMIT:
                    raise ValueError(f"result of {result_size} bytes")
            if not 0 <= output_size <= OUTPUT_KEPT:
                raise ValueError(f"output of {output_size} bytes")
            return result_size, output_size
        except Exception as exc:  # noqa: BLE001 - any deviation means the runner cannot be believed
            raise ProtocolError(f"malformed reply: {type(exc).__name__}") from None

    @classmethod
    def decode(cls, line: bytes, result: Optional[bytes] = None, output: bytes = b"") -> "Reply":
        """Strictly: any deviation from the shape is a :class:`ProtocolError`."""
        try:
            data = json.loads(line, parse_int=_parse_int, parse_constant=_reject_constant)
            if not isinstance(data, dict):
                raise ProtocolError("a reply is a JSON object")
            printed = int(data.get("printed", 0))
            text = output.decode("utf-8", "replace") + ("\n[output truncated]" if printed > len(output) else "")
            return cls(
                id=int(data["id"]),
                status=Status(data["status"]),
                result=result,
                output=text,
                seconds=_finite(data.get("seconds", 0.0)),
                printed=printed,
                cpu_seconds=_finite(data.get("cpu_seconds", 0.0)),
                cpu_limit=_optional_int(data.get("cpu_limit")),
                signal=_optional_int(data.get("signal")),
                exit_code=_optional_int(data.get("exit_code")),
            )
        except ProtocolError as exc:
            raise ProtocolError(f"malformed reply: {exc}") from None
        except Exception as exc:  # noqa: BLE001 - whatever the line held (deep nesting, odd types), the reply is malformed
            raise ProtocolError(f"malformed reply: {type(exc).__name__}: {valid_text(str(exc))[:200]}") from None


#: the runner's first line: it has imported torch and is ready for requests
READY = b'{"ready": true}\n'


def _optional_int(value: Any) -> Optional[int]:
    return None if value is None else int(value)


def _parse_int(literal: str) -> int:
    # no reply field needs more; a long digit string would make int() slow or raise
    if len(literal.lstrip("-")) > 32:
        raise ValueError("integer too long")
    return int(literal)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"bare {name}")


def _finite(value: Any) -> float:
    number = float(value)
    if not math.isfinite(number):
        raise ValueError("not a finite number")
    return number
