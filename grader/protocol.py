"""What the judge and the runner say to each other: typed requests and replies, one JSON line each.

The judge sends a :class:`Request` for every run of student code; the runner answers each with a
:class:`Reply`, in order. A reply is believed for nothing but its shape: the probe's result travels
as :mod:`grader.wire` bytes that the judge decodes strictly, and every verdict is the judge's own.
Both sides import this module and nothing else of each other's.
"""

from __future__ import annotations

import base64
import enum
import json
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Mapping, Optional

MiB = 1 << 20


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
    #: import only these files (their siblings still load when imported)
    only: Optional[tuple[str, ...]] = None
    #: module names the reference serves in place of files that hang or end the process at import
    stand_ins: tuple[str, ...] = ()
    #: attribute what the files change in the grader's world to the file that changed it
    track_files: bool = False
    #: set by the judge's runner handle; a reply carries it back
    id: int = -1

    def encode(self) -> bytes:
        data = asdict(self)
        data["files"], data["params"] = dict(self.files), dict(self.params)
        return json.dumps(data).encode("utf-8") + b"\n"

    @classmethod
    def decode(cls, line: bytes) -> "Request":
        try:
            data = json.loads(line)
            data["limits"] = Limits(**data["limits"])
            data["only"] = tuple(data["only"]) if data.get("only") is not None else None
            data["stand_ins"] = tuple(data.get("stand_ins", ()))
            return cls(**data)
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

    def encode(self) -> bytes:
        data = asdict(self)
        data["status"] = self.status.value
        data["result"] = base64.b64encode(self.result).decode("ascii") if self.result is not None else None
        return json.dumps(data).encode("utf-8") + b"\n"

    @classmethod
    def decode(cls, line: bytes) -> "Reply":
        """Strictly: any deviation from the shape is a :class:`ProtocolError`."""
        try:
            data = json.loads(line)
            result = data.get("result")
            return cls(
                id=int(data["id"]),
                status=Status(data["status"]),
                result=base64.b64decode(result, validate=True) if result is not None else None,
                output=str(data.get("output", "")),
                seconds=float(data.get("seconds", 0.0)),
                printed=int(data.get("printed", 0)),
                cpu_seconds=float(data.get("cpu_seconds", 0.0)),
                cpu_limit=_optional_int(data.get("cpu_limit")),
                signal=_optional_int(data.get("signal")),
                exit_code=_optional_int(data.get("exit_code")),
            )
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise ProtocolError(f"malformed reply: {exc}") from None


#: the runner's first line: it has imported torch and is ready for requests
READY = b'{"ready": true}\n'


def _optional_int(value: Any) -> Optional[int]:
    return None if value is None else int(value)
