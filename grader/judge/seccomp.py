"""A seccomp filter for the sandbox: no kernel state that outlives a check or a grading.

Keyrings belong to the user, not to any namespace, so a key added by one grading is found by
the next one running as the same user; SysV IPC objects and POSIX message queues live as long as
the IPC namespace, i.e. the whole runner, so they outlive a check. This filter makes those system
calls fail with EPERM and allows every other one. It is a classic-BPF program (``struct
sock_filter`` records) that bubblewrap loads with ``--seccomp FD``.
"""

from __future__ import annotations

import errno
import platform
import struct
from typing import Optional

#: ``struct sock_filter``: u16 code, u8 jt, u8 jf, u32 k, in the machine's byte order
_INSTRUCTION = struct.Struct("=HBBI")

# classic BPF opcodes
_LD_W_ABS = 0x20  # BPF_LD | BPF_W | BPF_ABS: load a 32-bit word of struct seccomp_data
_JEQ_K = 0x15  # BPF_JMP | BPF_JEQ | BPF_K
_JGE_K = 0x35  # BPF_JMP | BPF_JGE | BPF_K
_RET_K = 0x06  # BPF_RET | BPF_K

# struct seccomp_data: int nr; u32 arch; ...
_NR_OFFSET, _ARCH_OFFSET = 0, 4

SECCOMP_RET_ALLOW = 0x7FFF0000
SECCOMP_RET_ERRNO = 0x00050000

#: x32 system calls share AUDIT_ARCH_X86_64 and are told apart by this bit of the number
_X32_SYSCALL_BIT = 0x40000000

#: audit architecture and the blocked calls' numbers, per ``platform.machine()``
SYSCALLS = {
    "x86_64": (0xC000003E, {
        "add_key": 248, "request_key": 249, "keyctl": 250,
        "shmget": 29, "shmat": 30, "shmctl": 31, "shmdt": 67,
        "semget": 64, "semop": 65, "semctl": 66, "semtimedop": 220,
        "msgget": 68, "msgsnd": 69, "msgrcv": 70, "msgctl": 71,
        "mq_open": 240, "mq_unlink": 241, "mq_timedsend": 242, "mq_timedreceive": 243,
        "mq_notify": 244, "mq_getsetattr": 245,
    }),
    "aarch64": (0xC00000B7, {
        "add_key": 217, "request_key": 218, "keyctl": 219,
        "shmget": 194, "shmctl": 195, "shmat": 196, "shmdt": 197,
        "semget": 190, "semctl": 191, "semtimedop": 192, "semop": 193,
        "msgget": 186, "msgctl": 187, "msgrcv": 188, "msgsnd": 189,
        "mq_open": 180, "mq_unlink": 181, "mq_timedsend": 182, "mq_timedreceive": 183,
        "mq_notify": 184, "mq_getsetattr": 185,
    }),
}

NO_FILTER = ("no seccomp filter on this machine ({machine}): inside the sandbox a submission can still reach "
             "its user's keyrings and create SysV IPC objects that outlive a check")


def _op(code: int, k: int, jt: int = 0, jf: int = 0) -> bytes:
    return _INSTRUCTION.pack(code, jt, jf, k)


def program(machine: Optional[str] = None) -> Optional[bytes]:
    """The filter for ``machine`` (default: this one), or None where its system call numbers are not known."""
    if machine is None:
        machine = platform.machine().lower()
        if struct.calcsize("P") != 8:  # a 32-bit interpreter on a 64-bit kernel calls through the other ABI
            return None
    if machine not in SYSCALLS:
        return None
    arch, numbers = SYSCALLS[machine]
    tests = []
    if machine == "x86_64":  # x32 calls carry other numbers: refuse that ABI as a whole
        tests.append((_JGE_K, _X32_SYSCALL_BIT))
    tests += [(_JEQ_K, nr) for nr in sorted(set(numbers.values()))]
    # Layout: head, body, ALLOW, DENY; a jump offset counts the instructions it skips.
    body = [_op(_LD_W_ABS, _NR_OFFSET)]
    for i, (code, k) in enumerate(tests):
        body.append(_op(code, k, jt=len(tests) - i))  # over the remaining tests and ALLOW, to DENY
    # Another ABI of this kernel (i386 on x86_64, arm32 on aarch64) numbers its calls differently,
    # so the tests above would miss it: its calls fail with EPERM, without killing the process.
    head = [_op(_LD_W_ABS, _ARCH_OFFSET), _op(_JEQ_K, arch, jf=len(body) + 1)]
    allow, deny = _op(_RET_K, SECCOMP_RET_ALLOW), _op(_RET_K, SECCOMP_RET_ERRNO | errno.EPERM)
    return b"".join(head + body + [allow, deny])
