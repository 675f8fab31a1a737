"""The sandbox shows an allow-list only, gives each check a small fresh /tmp, and refuses kernel state that
would outlive a check (keyrings, SysV IPC).

The checks from inside run one real grading of the reference with a probing ``grad_clipping``: every run
of that hook reports what it can read, what it finds in /tmp, how filling /tmp ends, and what the
refused system calls return.
"""

from __future__ import annotations

import errno
import json
import os
import platform
import shutil
import site
import struct
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import pytest

import grader
from conftest import REFERENCE, REPO
from grader.judge import sandbox, seccomp

needs_bwrap = pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap (bwrap) is not installed")

GRADER_DIR = str(Path(grader.__file__).resolve().parent)
#: what a check may read besides its staged files (in /tmp): written here, not taken from sandbox.py
ALLOWED = sorted({"/usr", "/tmp", GRADER_DIR, os.path.realpath(sys.base_prefix), os.path.realpath(sys.prefix),
                  *(os.path.realpath(p) for p in site.getsitepackages()),
                  *(os.path.realpath(p) for p in sys.path if p.endswith(("site-packages", "dist-packages")))})
#: numbers of some refused calls, written here rather than taken from seccomp.py
SYSCALL_NUMBERS = {
    "x86_64": {"add_key": 248, "keyctl": 250, "shmget": 29, "semget": 64},
    "aarch64": {"add_key": 217, "keyctl": 219, "shmget": 194, "semget": 190},
}

PROBE = '''
if not globals().get("_sandbox_probed"):
    globals()["_sandbox_probed"] = True
    import ctypes, json, os, threading, uuid
    allowed, secrets, numbers, limit = {allowed!r}, {secrets!r}, {numbers!r}, {limit!r}

    def inside(path, roots):
        return any(path == r or path.startswith(r.rstrip("/") + "/") for r in roots)

    # Folders on the allow-list are not descended into (their files are allowed; walking them takes seconds).
    outside, count, tops = [], 0, set()
    for top, dirs, files in os.walk("/", followlinks=False):
        if top == "/":
            dirs[:] = [d for d in dirs if d not in ("proc", "dev", "sys")]
        dirs[:] = [d for d in dirs if not inside(os.path.join(top, d), allowed)]
        for name in files:
            path = os.path.join(top, name)
            if os.path.isfile(path) and not os.path.islink(path) and os.access(path, os.R_OK):
                count += 1
                tops.add("/" + path.split("/")[1])
                if len(outside) < 50:
                    outside.append(path)
    found = {{}}
    for path in secrets:
        try:
            with open(path, "rb") as f:
                found[path] = f.read(40).decode("utf-8", "replace")
        except OSError:
            pass
    print("SANDBOX-READ " + json.dumps({{"root": sorted(os.listdir("/")), "count": count, "tops": sorted(tops),
                                        "outside": outside, "secrets": found}}))

    # /tmp: what earlier runs left, then fill it in files below the file-size limit
    run = uuid.uuid4().hex
    left = sorted(n for n in os.listdir("/tmp") if n.startswith("sandbox-fill-"))
    written, code, chunk = 0, None, b"x" * (8 << 20)
    try:
        while written <= limit + (64 << 20):
            with open(f"/tmp/sandbox-fill-{{run}}-{{written}}", "wb") as f:
                f.write(chunk)
            written += len(chunk)
    except OSError as exc:
        code = exc.errno
    print("SANDBOX-TMP " + json.dumps({{"run": run, "left": left, "written": written, "errno": code}}))

    libc = ctypes.CDLL(None, use_errno=True)

    def errno_of(name, *args):
        ctypes.set_errno(0)
        return ctypes.get_errno() if libc.syscall(numbers[name], *args) == -1 else 0

    # invalid arguments: where a call is allowed it fails with EINVAL or EOPNOTSUPP, so EPERM is the filter's
    calls = {{"add_key": errno_of("add_key", b"user", b"", None, ctypes.c_size_t(0), ctypes.c_int(-2)),
             "keyctl": errno_of("keyctl", 9999, 0, 0),
             "shmget": errno_of("shmget", 0, ctypes.c_size_t(0), 0o600),
             "semget": errno_of("semget", 0, -1, 0o600)}}
    box = []
    thread = threading.Thread(target=box.append, args=(1,))  # pthread_create: clone3
    thread.start()
    thread.join()
    torch.set_num_threads(2)
    product = float((torch.ones(300, 300) @ torch.ones(300, 300)).sum())
    torch.set_num_threads(1)
    print("SANDBOX-CALLS " + json.dumps({{"calls": calls, "thread": box == [1], "torch": product == 300.0 ** 3}}))
'''


def with_probe(source: str, body: str) -> str:
    """``source`` with ``body`` at the start of ``grad_clipping``'s body."""
    head, sep, rest = source.partition("def grad_clipping(")
    signature, colon, tail = rest.partition(":\n")
    assert sep and colon, "grad_clipping not found in the reference"
    indented = "".join(f"    {line}\n" if line else "\n" for line in body.splitlines())
    return head + sep + signature + colon + indented + tail


def records(report, tag: str) -> list[dict]:
    """Every ``tag`` line the probing hook printed, one per run (checks reading the same run repeat it)."""
    found = {}
    for check in report.all_checks():
        for line in check.output.splitlines():
            if line.startswith(tag + " "):
                found[line] = json.loads(line[len(tag) + 1:])
    return list(found.values())


@pytest.fixture(scope="module")
def probed(runner, grading, tmp_path_factory):
    """The report of one grading whose grad_clipping probes the sandbox from inside every run."""
    if not runner.sandboxed:
        pytest.skip("the runner is not sandboxed here")
    machine = platform.machine()
    if machine not in SYSCALL_NUMBERS:
        pytest.skip(f"no system call numbers for {machine}")
    planted = Path.home() / f"sandbox-secret-{uuid.uuid4().hex[:8]}.txt"
    planted.write_text("planted secret\n")
    secrets = [str(REPO / ".git" / "HEAD"), str(REFERENCE / "rnn_scratch.py"), str(planted), "/etc/shadow",
               *(os.path.join(location, "rnn_scratch.py") for location in sandbox.answer_dirs())]
    body = PROBE.format(allowed=ALLOWED, secrets=secrets, numbers=SYSCALL_NUMBERS[machine], limit=sandbox.TMP_LIMIT)
    folder = tmp_path_factory.mktemp("probing")
    for path in REFERENCE.glob("*.py"):
        if path.name != "__init__.py":
            shutil.copyfile(path, folder / path.name)
    (folder / "grad_clipping.py").write_text(with_probe((REFERENCE / "grad_clipping.py").read_text(), body))
    try:
        report = grading(folder)
    finally:
        planted.unlink()
    return report, secrets


@needs_bwrap
def test_a_check_reads_only_the_allow_list(probed):
    report, _ = probed
    runs = records(report, "SANDBOX-READ")
    assert runs, "the probing hook printed nothing:\n" + "\n".join(c.output[-500:] for c in report.all_checks())
    for run in runs:
        assert not run["secrets"], f"readable inside a check: {run['secrets']}"
        assert run["count"] == 0, f"{run['count']} readable files outside the allow-list: {run['outside']}"
        assert set(run["root"]) <= {"usr", "bin", "sbin", "lib", "lib32", "lib64", "libx32", "proc", "dev", "tmp",
                                    *(p.split("/")[1] for p in ALLOWED)}, run["root"]
        assert "etc" not in run["root"] and "sys" not in run["root"] and "home" not in run["root"]


@needs_bwrap
def test_tmp_is_limited_and_emptied_between_checks(probed):
    report, _ = probed
    runs = records(report, "SANDBOX-TMP")
    assert len(runs) >= 2, "need two runs of the hook in one runner"
    for run in runs:
        assert run["errno"] == errno.ENOSPC, run
        assert run["written"] <= sandbox.TMP_LIMIT
    left = [run["left"] for run in runs if run["left"]]
    # The zygote empties /tmp after every run (grader/runner/zygote.py); without that a run sees earlier files.
    assert not left, f"a later check saw files an earlier one wrote in /tmp: {left[0][:5]}"


@needs_bwrap
def test_keyrings_and_sysv_ipc_are_refused_threads_and_torch_work(probed):
    report, _ = probed
    runs = records(report, "SANDBOX-CALLS")
    assert runs
    for run in runs:
        assert run["calls"] == {"add_key": errno.EPERM, "keyctl": errno.EPERM, "shmget": errno.EPERM,
                                "semget": errno.EPERM}, run["calls"]
        assert run["thread"] and run["torch"], run


# ------------------------------------------------------------------ the command line and the filter, without running


def test_the_command_shows_no_repository_and_no_reference():
    built = sandbox.sandbox_command()
    if built is None:
        pytest.skip("no sandbox here")
    command = built.command
    shown = [command[i + 2] for i, arg in enumerate(command) if arg == "--ro-bind"]
    assert "/" not in shown
    for path in shown:
        assert not (str(REPO) + "/").startswith(path.rstrip("/") + "/"), f"{path} shows the whole checkout"
        for location in sandbox.answer_dirs():
            inside = location == path or location.startswith(path + "/")
            if inside:  # only where it is masked right after
                at = command.index(location)
                assert command[at - 1] == "--tmpfs", (path, location)
    assert any(GRADER_DIR == p or GRADER_DIR.startswith(p + "/") for p in shown)
    tmp = command.index("/tmp")
    assert command[tmp - 3:tmp] == ["--size", str(sandbox.TMP_LIMIT), "--tmpfs"]


def test_a_reference_folder_inside_a_shown_folder_is_masked(monkeypatch, tmp_path):
    if shutil.which("bwrap") is None:
        pytest.skip("no bwrap")
    wheel = tmp_path / "site-packages"
    monkeypatch.setattr(sandbox, "visible_paths", lambda: [str(wheel)])
    monkeypatch.setattr(sandbox, "answer_dirs", lambda: [str(wheel / "grader" / "reference")])
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    command = sandbox.sandbox_command().command
    masked = str(wheel / "grader" / "reference")
    assert command.index(masked) > command.index(str(wheel))
    assert command[command.index(masked) - 1] == "--tmpfs" and "--remount-ro" in command


def test_without_bwrap_or_setpriv_there_is_no_sandbox(monkeypatch):
    real = shutil.which
    monkeypatch.setattr(shutil, "which", lambda name: None if name == "bwrap" else real(name))
    assert sandbox.sandbox_command() is None
    monkeypatch.setattr(shutil, "which", lambda name: None if name == "setpriv" else "/usr/bin/" + name)
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    assert sandbox.sandbox_command() is None


def test_unprivileged_runners_unshare_everything(monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name: "/usr/bin/" + name)
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    command = sandbox.sandbox_command().command
    assert "--unshare-all" in command and "/usr/bin/setpriv" not in command


def test_without_a_filter_the_sandbox_says_so(monkeypatch):
    from grader.judge import runners

    monkeypatch.setattr(shutil, "which", lambda name: "/usr/bin/" + name)
    monkeypatch.setattr(seccomp, "program", lambda machine=None: None)
    built = sandbox.sandbox_command()
    assert "--seccomp" not in built.command and not built.files
    assert built.notices == [seccomp.NO_FILTER.format(machine=platform.machine())]
    monkeypatch.setattr(runners, "sandbox_command", lambda: built)  # it holds its own reference to the function
    assert built.notices[0] in runners.Runner().notices


def run_filter(program: bytes, nr: int, arch: int) -> int:
    """What classic-BPF ``program`` returns for a call: enough of the machine for seccomp's opcodes."""
    ops = [struct.unpack("=HBBI", program[i:i + 8]) for i in range(0, len(program), 8)]
    data = struct.pack("=iIQ", nr, arch, 0)
    pc, acc = 0, 0
    while True:
        code, jt, jf, k = ops[pc]
        if code == 0x20:
            acc = struct.unpack_from("=I", data, k)[0]
        elif code in (0x15, 0x35):
            taken = acc == k if code == 0x15 else acc >= k
            pc += jt if taken else jf
        elif code == 0x06:
            return k
        else:
            raise AssertionError(f"unexpected opcode {code:#x}")
        pc += 1


@pytest.mark.parametrize("machine", ["x86_64", "aarch64"])
def test_the_filter_refuses_only_the_listed_calls(machine):
    arch, numbers = seccomp.SYSCALLS[machine]
    program = seccomp.program(machine)
    eperm = seccomp.SECCOMP_RET_ERRNO | errno.EPERM
    for name, nr in numbers.items():
        assert run_filter(program, nr, arch) == eperm, name
    allowed = set(range(500)) - set(numbers.values())
    assert {run_filter(program, nr, arch) for nr in allowed} == {seccomp.SECCOMP_RET_ALLOW}  # clone3 (435) too
    assert run_filter(program, 250, 0x40000003) == eperm  # another ABI (i386): refused, not killed
    if machine == "x86_64":
        assert run_filter(program, 0x40000000 | 39, arch) == eperm  # x32


# i386 keyctl(9999) through ``int 0x80`` from a 64-bit process: the other ABI numbers its calls differently
INT80_KEYCTL = """
import ctypes, mmap
# push rbx; mov eax, 288; mov ebx, 9999; int 0x80; pop rbx; ret
code = bytes([0x53, 0xB8, 0x20, 0x01, 0, 0, 0xBB, 0x0F, 0x27, 0, 0, 0xCD, 0x80, 0x5B, 0xC3])
page = mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
page.write(code)
print(ctypes.CFUNCTYPE(ctypes.c_int)(ctypes.addressof(ctypes.c_char.from_buffer(page)))())
"""


@needs_bwrap
def test_the_other_abi_cannot_go_around_the_filter():
    if platform.machine() != "x86_64":
        pytest.skip("an x86_64 check")
    plain = subprocess.run([sys.executable, "-I", "-c", INT80_KEYCTL], capture_output=True, text=True, timeout=60)
    if plain.stdout.strip() != str(-errno.EOPNOTSUPP):
        pytest.skip(f"this kernel runs no i386 calls ({plain.stdout.strip() or plain.returncode})")
    built = sandbox.sandbox_command()
    if built is None or "--seccomp" not in built.command:
        pytest.skip("no sandbox or no filter here")
    command = built.command[:-len(sandbox.runner_command(sweep=True))] + [sys.executable, "-I", "-c", INT80_KEYCTL]
    done = subprocess.run(command, pass_fds=built.pass_fds(), capture_output=True, text=True, timeout=60,
                          env=sandbox.runner_env())
    assert done.stdout.strip() == "-1", done  # the filter's EPERM (a raw call returns -errno; -1 is -EPERM)


def test_no_filter_for_unknown_machines():
    assert seccomp.program("riscv64") is None


def test_an_authoritative_grade_never_runs_where_the_answers_are_readable(monkeypatch, tmp_path, capsys):
    from grader import cli
    from grader.judge import runners

    monkeypatch.setattr(runners, "sandbox_command", lambda: None)  # as where bubblewrap is missing
    answers = Path(tempfile.mkdtemp(prefix="answers-"))  # directly in /tmp: every user can pass through
    answers.chmod(0o755)
    monkeypatch.setattr(sandbox, "answer_dirs", lambda: [str(answers)])
    answer = answers / "rnn_scratch.py"
    answer.write_text("answer = 1\n")
    answer.chmod(0o644)
    if os.geteuid() == 0 and shutil.which("setpriv"):
        with pytest.raises(runners.RunnerError, match="chmod -R o-rwx"):
            runners.Runner(sandbox="require")
    folder = tmp_path / "submission"
    shutil.copytree(REPO / "exercises", folder)
    try:
        assert cli.main([str(folder), "--authoritative"]) == cli.GRADER_FAILURE
        assert "--allow-unisolated" in capsys.readouterr().err
    finally:
        shutil.rmtree(answers)


def test_allowing_an_unisolated_authoritative_grade_says_so_in_the_report(monkeypatch, tmp_path):
    from grader import cli
    from grader.judge import runners

    monkeypatch.setattr(runners, "sandbox_command", lambda: None)
    out = tmp_path / "out"
    cli.main([str(REPO / "exercises"), "--authoritative", "--allow-unisolated", "--out", str(out)])
    assert "not isolated" in (out / "report.html").read_text()


def test_emptying_tmp_keeps_mounts_and_the_way_to_them_but_nothing_else(tmp_path):
    from grader.runner.zygote import _clear_folder

    mount = tmp_path / "ci" / ".venv"  # as where the checkout and its venv live under /tmp
    (mount / "lib").mkdir(parents=True)
    (mount / "lib" / "torch.py").write_text("")
    (tmp_path / "ci" / "stash").write_text("left by a run")
    (tmp_path / "leak").mkdir()
    (tmp_path / "leak" / "answer").write_text("left by a run")
    _clear_folder(str(tmp_path), (str(tmp_path), str(mount)))
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*")) == [
        "ci", "ci/.venv", "ci/.venv/lib", "ci/.venv/lib/torch.py"]


@pytest.mark.parametrize("kernel", [True, False], ids=["kernel relay", "through memory (macOS)"])
def test_the_zygote_relays_bytes_exactly_either_way(monkeypatch, kernel):
    from grader.runner import zygote

    if kernel and not zygote.KERNEL_RELAY:
        pytest.skip("no splice/memfd here")
    monkeypatch.setattr(zygote, "KERNEL_RELAY", kernel)
    payload = os.urandom(50_000)
    source_r, source_w = os.pipe()
    target_r, target_w = os.pipe()
    os.write(source_w, payload + b"next frame")
    zygote._pass_on(source_r, target_w, len(payload), spill=os.open(os.devnull, os.O_WRONLY))
    os.close(target_w)
    assert b"".join(iter(lambda: os.read(target_r, 1 << 16), b"")) == payload
    assert os.read(source_r, 100) == b"next frame"  # exactly the frame's bytes were taken
    memory = zygote._memory_file("result")
    os.write(source_w, payload)
    moved = 0
    while moved < len(payload):
        moved += zygote._move(source_r, memory, len(payload) - moved)
    out_r, out_w = os.pipe()
    saved = os.dup(1)
    os.dup2(out_w, 1)
    try:
        zygote._send_file(memory, 10, 1000)
    finally:
        os.dup2(saved, 1)
    assert os.read(out_r, 2000) == payload[10:1010]


def test_each_runner_runs_as_a_user_of_its_own():
    """The per-user process limit counts a user's processes machine-wide: runners sharing a user (a batch's
    workers, parallel tests) would refuse each other's threads."""
    from grader.judge.sandbox import RUNNER_UIDS, runner_uid

    uids = [runner_uid() for _ in range(8)]
    assert len(set(uids)) == 8 and all(uid in RUNNER_UIDS for uid in uids)
    assert max(RUNNER_UIDS) < 65534  # below nobody, and mapped where a container maps 65536 users
