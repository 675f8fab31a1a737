"""How the runner process is started: its command line, environment and bubblewrap sandbox.

The sandbox shows an allow-list, read-only: /usr (with the /bin, /lib, /lib64, /sbin links), the Python
installation, the runner's site-packages (a virtual environment as a whole) and the ``grader`` package's
own folder, each at its own path; fresh /proc and /dev. /tmp is an empty tmpfs of TMP_LIMIT bytes, the only
writable place; /dev/shm is empty and read-only. No /etc, /sys, home folders or repository (.git, tests/,
reference/); a shown folder that holds answers (grader/demo, an installed wheel's grader/reference) is masked empty.
A seccomp filter (:mod:`grader.judge.seccomp`) refuses keyrings, SysV IPC and POSIX message queues.
"""

from __future__ import annotations

import functools
import itertools
import json
import os
import platform
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Optional

import grader
from grader.judge import seccomp
from grader.registry import answer_dirs

#: the folder holding the ``grader`` package (and, in a checkout, ``reference``)
PACKAGE_ROOT = Path(grader.__file__).resolve().parent.parent
#: the ``grader`` package's own folder: the only part of a checkout the sandbox shows
GRADER_DIR = Path(grader.__file__).resolve().parent
#: the runner's entry point, named rather than imported: the judge never loads the runner's modules
RUNNER_ENTRY = "grader.runner.zygote"
#: variables passed through to the runner; everything else in the environment stays behind
PASSED_ENV = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "CUDA_VISIBLE_DEVICES", "LD_LIBRARY_PATH", "TMPDIR")
#: the unprivileged users runners run as when the grader is started as root, one per runner: the
#: per-user process limit (RLIMIT_NPROC) counts every process and thread of a user on the machine,
#: so runners sharing one user (many at once: a batch's workers, parallel tests) could refuse each
#: other's threads. Numbers below 65536, which containers map, and above the usual users'.
RUNNER_UIDS = range(61000, 65000)
_LAUNCHES = itertools.count()
#: bytes the sandbox's /tmp holds, the submission's staged files included
TMP_LIMIT = 256 * 1024 * 1024
#: the top-level links of a merged-/usr system, recreated as links
USR_LINKS = ("bin", "sbin", "lib", "lib32", "lib64", "libx32")

SANDBOX_OFF = ("sandbox off: {why}; submissions still run in a separate process with time, memory and output "
               "limits, but can reach the network and write where your user can (install the 'bubblewrap' "
               "package on Linux for full isolation)")


def runner_env() -> dict[str, str]:
    env = {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "LANG": "C.UTF-8",
        "HOME": os.environ.get("TMPDIR", "/tmp"),
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "OPENBLAS_NUM_THREADS": "1",
    }
    env.update({k: os.environ[k] for k in PASSED_ENV if k in os.environ})
    return env


def runner_command(sweep: bool = False) -> list[str]:
    # -I: no user site, no PYTHON* variables, no script folder on sys.path, so a
    # submission's torch.py cannot shadow torch. -B: write no bytecode.
    # --answers: where the answers are on this machine (the sandbox hides them, so the runner cannot
    # look them up itself), so that a submission reaching for them is seen.
    bootstrap = f"import sys; sys.path.insert(0, sys.argv[1]); from {RUNNER_ENTRY} import main; main()"
    return [sys.executable, "-I", "-B", "-c", bootstrap, str(PACKAGE_ROOT),
            "--answers=" + os.pathsep.join(answer_dirs())] + (["--sweep"] if sweep else [])


@dataclass
class Sandbox:
    """bubblewrap's command line for the runner and the files it names by descriptor number."""

    command: list[str]
    #: kept open as long as the command may be started; Popen(pass_fds=sandbox.pass_fds())
    files: list[IO[bytes]] = field(default_factory=list)
    #: what this sandbox lacks, for the grading's notices
    notices: list[str] = field(default_factory=list)

    def pass_fds(self) -> tuple[int, ...]:
        for f in self.files:
            f.seek(0)  # the descriptors share an offset with the runner: each start reads from the top
        return tuple(f.fileno() for f in self.files)


def _within(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip("/") + "/")


@functools.lru_cache(maxsize=1)
def _runner_site() -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The runner interpreter's own ``sys.path`` and site-packages (as ``-I`` sets them, unlike ours)."""
    code = "import json, site, sys; print(json.dumps([sys.path, site.getsitepackages()]))"
    try:
        done = subprocess.run([sys.executable, "-I", "-B", "-c", code], capture_output=True, text=True,
                              timeout=60, env=runner_env())
        path, site_dirs = json.loads(done.stdout)
    except (OSError, ValueError, subprocess.SubprocessError):
        import site
        path, site_dirs = sys.path, site.getsitepackages()
    return tuple(path), tuple(site_dirs)


def visible_paths() -> list[str]:
    """Folders bound read-only at their own path: the interpreter, its packages, the grader package."""
    runner_path, site_dirs = _runner_site()
    # In a checkout, the folder above ``grader`` is the repository: of it only the package and a
    # virtual environment inside it are shown, never .git, tests/ or reference/.
    checkout = None if str(PACKAGE_ROOT) in {os.path.realpath(p) for p in site_dirs} else str(PACKAGE_ROOT)
    pythons = {os.path.realpath(sys.prefix), os.path.realpath(sys.base_prefix)}

    def shows_checkout(path: str) -> bool:
        if checkout is None:
            return False
        return _within(checkout, path) or (_within(path, checkout) and not any(_within(path, p) for p in pythons))

    wanted = [sys.base_prefix, sys.base_exec_prefix, sys.prefix, sys.exec_prefix,
              os.path.dirname(os.path.realpath(sys.executable)), *runner_path, *site_dirs]
    paths = {str(GRADER_DIR)}
    for path in wanted:
        if not path or not os.path.isdir(path) or _within(os.path.realpath(path), "/usr"):
            continue  # /usr is shown whole, also through the /lib-style links
        for form in {os.path.abspath(path), os.path.realpath(path)}:  # as the runner names it, and where it is
            if form != "/" and not shows_checkout(form):
                paths.add(form)
    # outermost first; a folder inside another bound one comes with it
    kept: list[str] = []
    for path in sorted(paths):
        if not any(_within(path, outer) for outer in kept):
            kept.append(path)
    return kept


def _memory_file(name: str, data: bytes) -> IO[bytes]:
    f = open(os.memfd_create(name), "w+b")  # close-on-exec; Popen's pass_fds hands it over
    f.write(data)
    f.flush()
    return f


def sandbox_command() -> Optional[Sandbox]:
    """The runner command wrapped in bubblewrap, or None where bubblewrap (or setpriv, as root) is missing."""
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        return None
    as_root = os.geteuid() == 0
    setpriv = shutil.which("setpriv")
    if as_root and setpriv is None:
        return None
    if as_root:  # real namespaces without a user namespace, so privileges can really be dropped
        spaces = ["--unshare-ipc", "--unshare-pid", "--unshare-net", "--unshare-uts", "--unshare-cgroup-try"]
    else:
        spaces = ["--unshare-all"]
    # /tmp first: a folder shown below may live under it (a checkout in /tmp) and must stay on top
    args = [bwrap, *spaces, "--die-with-parent", "--new-session",
            "--proc", "/proc", "--dev", "/dev",
            "--perms", "0555", "--tmpfs", "/dev/shm", "--remount-ro", "/dev/shm",
            "--perms", "1777", "--size", str(TMP_LIMIT), "--tmpfs", "/tmp",
            "--ro-bind", "/usr", "/usr"]
    for name in USR_LINKS:
        top = "/" + name
        if os.path.islink(top):
            args += ["--symlink", os.readlink(top), top]
        elif os.path.isdir(top):
            args += ["--ro-bind", top, top]
    made: set[str] = set()
    shown = visible_paths()
    for path in shown:
        # folders bwrap creates on the way are 0700 by default: the runner's user must pass through
        for parent in [str(p) for p in reversed(Path(path).parents) if str(p) != "/"]:
            if parent not in made:
                made.add(parent)
                args += ["--perms", "0755", "--dir", parent]
        args += ["--ro-bind", path, path]
    # Where a shown folder holds answers (the demo in grader/demo/, an installed wheel's grader/reference/), hide them.
    for location in answer_dirs():
        if any(_within(location, path) for path in ["/usr", *shown]):
            args += ["--perms", "0555", "--tmpfs", location, "--remount-ro", location]
    args += ["--setenv", "TMPDIR", "/tmp", "--setenv", "HOME", "/tmp", "--chdir", "/tmp"]
    sandbox = Sandbox(command=[])
    program = seccomp.program()
    if program is None:
        sandbox.notices.append(seccomp.NO_FILTER.format(machine=platform.machine()))
    else:
        sandbox.files.append(_memory_file("seccomp", program))
        args += ["--seccomp", str(sandbox.files[-1].fileno())]
    args.append("--")
    if as_root:
        args += _drop_to(runner_uid(), setpriv)
    sandbox.command = args + runner_command(sweep=True)
    return sandbox


def runner_uid() -> int:
    """A user for the next runner, different from this process's other runners' and, very likely, from
    other processes' (spread by the process id)."""
    return RUNNER_UIDS[(os.getpid() * 131 + next(_LAUNCHES)) % len(RUNNER_UIDS)]


def _drop_to(uid: int, setpriv: str) -> list[str]:
    return [setpriv, f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "--inh-caps=-all", "--"]


def _others_can_read(path: str) -> bool:
    """Could a user who owns nothing here read ``path`` (every folder above it passable, the file readable)?"""
    try:
        if not os.stat(path).st_mode & 0o004:
            return False
        return all(os.stat(parent).st_mode & 0o001 for parent in map(str, Path(path).parents))
    except OSError:
        return False


def unprivileged_command() -> tuple[Optional[list[str]], str]:
    """The runner as an unprivileged user that cannot read the answers, where bubblewrap cannot run
    (containers that forbid namespaces): ``(command, "")``, or ``(None, why not and what to do)``."""
    setpriv = shutil.which("setpriv")
    if os.geteuid() != 0 or setpriv is None:
        return None, ("without bubblewrap the runner must drop to an unprivileged user, which needs the grader "
                      "to run as root with setpriv (util-linux) installed")
    for folder in answer_dirs():
        files = [folder] + [str(p) for p in Path(folder).rglob("*") if p.is_file()]
        if any(_others_can_read(f) for f in files):
            return None, (f"the answers in {folder} are readable by every user; make them private "
                          f"(chmod -R o-rwx {folder}) so the unprivileged runner cannot read them")
    # no PID namespace here: never --sweep (it would kill every process of that user on the machine)
    return [*_drop_to(runner_uid(), setpriv), *runner_command()], ""
