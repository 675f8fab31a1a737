"""How the runner process is started: its command line, environment and bubblewrap sandbox."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path
from typing import Optional

import grader

#: the folder holding the ``grader`` package (and, in a checkout, ``reference``)
PACKAGE_ROOT = Path(grader.__file__).resolve().parent.parent
#: the runner's entry point, named rather than imported: the judge never loads the runner's modules
RUNNER_ENTRY = "grader.runner.zygote"
#: variables passed through to the runner; everything else in the environment stays behind
PASSED_ENV = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "CUDA_VISIBLE_DEVICES", "LD_LIBRARY_PATH", "TMPDIR")
#: the unprivileged user runners run as when the grader is started as root
RUNNER_UID = 65534
#: folders hidden inside the sandbox (home folders, other users' temporary files)
HIDDEN = ("/root", "/home", "/tmp", "/var/tmp", "/run", "/mnt", "/media", "/srv")

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
    bootstrap = f"import sys; sys.path.insert(0, sys.argv[1]); from {RUNNER_ENTRY} import main; main()"
    return [sys.executable, "-I", "-B", "-c", bootstrap, str(PACKAGE_ROOT)] + (["--sweep"] if sweep else [])


def _needed_paths() -> list[str]:
    """Folders the runner must read that the sandbox hides: Python itself, installed packages, the grader."""
    paths = {sys.prefix, sys.base_prefix, sys.exec_prefix, str(PACKAGE_ROOT)}
    paths.update(p for p in sys.path if p)
    paths.add(os.path.dirname(os.path.realpath(sys.executable)))
    real = sorted({os.path.realpath(p) for p in paths if os.path.isdir(p)})
    hidden = [p for p in real if any(p == h or p.startswith(h + "/") for h in HIDDEN)]
    return [p for p in hidden if not any(p.startswith(q + "/") for q in hidden)]


def sandbox_command() -> Optional[list[str]]:
    """The runner command wrapped in bubblewrap, or None where bubblewrap (or setpriv, as root) is missing."""
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        return None
    as_root = os.geteuid() == 0
    if as_root:  # real namespaces without a user namespace, so privileges can really be dropped
        spaces = ["--unshare-ipc", "--unshare-pid", "--unshare-net", "--unshare-uts", "--unshare-cgroup-try"]
    else:
        spaces = ["--unshare-all"]
    args = [bwrap, *spaces, "--die-with-parent", "--new-session", "--ro-bind", "/", "/"]
    for hidden in HIDDEN:
        if os.path.isdir(hidden):
            args += ["--perms", "1777" if hidden.endswith("tmp") else "0755", "--tmpfs", hidden]
    args += ["--proc", "/proc", "--dev", "/dev"]
    made: set[str] = set()
    for path in _needed_paths():
        # folders bwrap creates on the way are 0700 by default: the runner's user must pass through
        parents = [str(p) for p in reversed(Path(path).parents) if str(p) not in ("/", *HIDDEN)]
        for parent in parents:
            if parent not in made:
                made.add(parent)
                args += ["--perms", "0755", "--dir", parent]
        args += ["--ro-bind", path, path]
    args += ["--chdir", "/tmp", "--"]
    if as_root:
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            return None
        args += [setpriv, f"--reuid={RUNNER_UID}", f"--regid={RUNNER_UID}", "--clear-groups",
                 "--inh-caps=-all", "--"]
    return args + runner_command(sweep=True)
