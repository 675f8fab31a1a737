"""The Gradescope autograder archive: ``grade --gradescope-autograder OUT.zip``.

Gradescope unpacks the archive into ``/autograder/source``, runs ``setup.sh`` once while it builds
the image, and ``run_autograder`` for every submission. The archive holds:

* ``setup.sh``: bubblewrap (the sandbox), a virtual environment in ``/autograder/venv`` with the CPU
  build of the torch version installed here and this very grader (a wheel built now from its checkout,
  or ``rnn-grader==VERSION`` from the package index when it was not installed from one);
* ``run_autograder``: grades ``/autograder/submission`` with :mod:`grader.autograder_run` and always
  leaves ``/autograder/results/results.json``;
* ``autograder.json``: what the archive holds and the run's settings (never the secret itself);
* the course configuration (``course/``), the check packs (``packs/<name>/*.py``), the corpus
  (``corpus/``) and the secret seed (``secret-seed``), each when given.

The archive is deterministic: the same inputs give the same bytes.
"""

from __future__ import annotations

import importlib.metadata
import io
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Any, Optional

import grader
from grader.config import RunConfig

#: names inside the archive (and so in /autograder/source)
MANIFEST, SECRET_FILE, SETUP, RUN = "autograder.json", "secret-seed", "setup.sh", "run_autograder"
COURSE_DIR, PACKS_DIR, CORPUS_DIR, WHEELS_DIR = "course", "packs", "corpus", "wheels"
#: where the CPU builds of torch come from (the default index's Linux wheels bring CUDA, gigabytes of it)
TORCH_CPU_INDEX = "https://download.pytorch.org/whl/cpu"
#: the oldest Python the grader runs on (pyproject's requires-python); setup.sh installs a newer one when needed
MIN_PYTHON = (3, 10)
#: the grader's distribution name on the package index
DISTRIBUTION = "rnn-grader"
#: the largest corpus bundled
CORPUS_LIMIT = 64 * 1024 * 1024
#: a zip's earliest date: every member gets it, so that building twice gives the same bytes
_EPOCH = (1980, 1, 1, 0, 0, 0)
_SOURCE_DATE_EPOCH = "315532800"  # the same moment, for the wheel's own members
#: parts of a checkout a wheel is never built from (the copy leaves them behind)
_NOT_BUILT = {".git", ".hg", ".venv", "venv", "env", "build", "dist", "tests", "bench", "docs", "out",
              "report-out", "node_modules", "__pycache__", ".pytest_cache", ".mypy_cache", ".ruff_cache", ".tox"}


class AutograderError(Exception):
    """The archive cannot be built; the message says why and what to do."""


def build_archive(out_zip: Path, config: RunConfig) -> Path:
    """Write the Gradescope autograder archive for this course setup to ``out_zip``; its path.

    :param config: ``config.course`` (the configuration bundled), ``config.plugin_dirs`` (the packs),
        ``config.secret``, ``config.corpus_path``, ``config.check_timeout`` and ``config.memory_limit``
    :raises AutograderError: the name does not end in .zip, its folder is missing, a part cannot be
        read or the grader's wheel cannot be built, or the file cannot be written
    """
    out_zip = Path(out_zip)
    if out_zip.suffix.lower() != ".zip":
        raise AutograderError(f"{out_zip}: the autograder archive's name must end in .zip (Gradescope uploads a zip "
                              "file), e.g. autograder.zip")
    if not out_zip.parent.is_dir():
        raise AutograderError(f"{out_zip}: the folder {out_zip.parent} does not exist; create it first or write the "
                              "archive elsewhere")
    if out_zip.is_dir():
        raise AutograderError(f"{out_zip} is a folder; give the name of the zip file to write")
    members: dict[str, tuple[bytes, int]] = {}
    manifest: dict[str, Any] = {"grader_version": grader.__version__, "torch": torch_version()}
    if config.course is not None:
        name = f"{COURSE_DIR}/{Path(config.course.path).name}"
        members[name] = (_read(Path(config.course.path), "the course configuration"), 0o644)
        manifest["course"] = name
    if config.corpus_path is not None:
        name = f"{CORPUS_DIR}/{Path(config.corpus_path).name}"
        members[name] = (_read(Path(config.corpus_path), "the corpus", CORPUS_LIMIT), 0o644)
        manifest["corpus"] = name
    manifest["packs"] = _add_packs(config.plugin_dirs, members)
    if config.secret:
        members[SECRET_FILE] = (config.secret.encode("utf-8"), 0o600)
        manifest["secret"] = SECRET_FILE
    manifest["timeout"] = config.check_timeout
    manifest["memory_limit"] = config.memory_limit
    with tempfile.TemporaryDirectory(prefix="grader-autograder-") as scratch:
        wheel = grader_wheel(Path(scratch))
        if wheel is None:
            install = f"{DISTRIBUTION}=={grader.__version__}"
            print(f"note: the grader was not installed from its checkout, so setup.sh installs {install} from the "
                  "package index; make sure that version is published there", file=sys.stderr)
        else:
            install = f"{WHEELS_DIR}/{wheel.name}"
            members[install] = (wheel.read_bytes(), 0o644)
        manifest["grader"] = install
        members[SETUP] = (setup_script(manifest).encode(), 0o755)
        members[RUN] = (RUN_SCRIPT.encode(), 0o755)
        members[MANIFEST] = ((json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode(), 0o644)
        _write_zip(out_zip, members)
    return out_zip


def torch_version() -> str:
    """The version of the torch installed here, without its build tag (2.13.0+cpu -> 2.13.0)."""
    try:
        version = importlib.metadata.version("torch")
    except importlib.metadata.PackageNotFoundError:
        raise AutograderError("torch is not installed here, so the archive cannot pin its version; install the "
                              "grader with its dependencies first") from None
    return version.split("+", 1)[0]


def project_root() -> Optional[Path]:
    """The checkout the running grader comes from (its pyproject.toml names rnn-grader), or None."""
    root = Path(grader.__file__).resolve().parent.parent
    try:
        text = (root / "pyproject.toml").read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None
    return root if re.search(rf'(?m)^name\s*=\s*"{DISTRIBUTION}"\s*$', text) else None


def grader_wheel(scratch: Path) -> Optional[Path]:
    """A wheel of the running grader built from its checkout into ``scratch``; None when there is no checkout.

    The checkout is copied first (without its caches, build outputs and tests), so building leaves
    nothing behind in it and no stale build output ends up in the wheel.
    """
    root = project_root()
    if root is None:
        return None
    source, out = scratch / "project", scratch / "wheel"

    def skipped(folder: str, names: list[str]) -> set[str]:
        top = Path(folder) == root
        return {n for n in names if n == "__pycache__" or n.endswith((".pyc", ".egg-info"))
                or (top and (n in _NOT_BUILT or n.startswith(".")))}

    try:
        shutil.copytree(root, source, symlinks=True, ignore=skipped)
    except (OSError, shutil.Error) as exc:
        raise AutograderError(f"cannot copy the grader's checkout {root} to build its wheel: {exc}") from None
    env = dict(os.environ, SOURCE_DATE_EPOCH=_SOURCE_DATE_EPOCH, PIP_DISABLE_PIP_VERSION_CHECK="1")
    command = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--quiet",
               "-w", str(out), str(source)]
    try:
        done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise AutograderError(f"cannot build the grader's wheel ({exc}); check that pip works here") from None
    wheels = sorted(out.glob("*.whl")) if out.is_dir() else []
    if done.returncode != 0 or len(wheels) != 1:
        tail = " | ".join(line.strip() for line in (done.stderr or done.stdout).strip().splitlines()[-5:])
        raise AutograderError(f"cannot build the grader's wheel from {root} (pip wheel exited {done.returncode}: "
                              f"{tail or 'no output'}); the build needs pip and setuptools installed here")
    return wheels[0]


def setup_script(manifest: dict[str, Any]) -> str:
    """setup.sh for this archive: the pinned torch and grader named in ``manifest``."""
    grader_spec = manifest["grader"]
    if grader_spec.startswith(WHEELS_DIR + "/"):
        grader_spec = '"$SOURCE"/' + shlex.quote(grader_spec)
    else:
        grader_spec = shlex.quote(grader_spec)
    return (SETUP_SCRIPT.replace("@TORCH@", shlex.quote(f"torch=={manifest['torch']}"))
            .replace("@TORCH_INDEX@", TORCH_CPU_INDEX)
            .replace("@GRADER@", grader_spec)
            .replace("@MIN_PYTHON@", ", ".join(map(str, MIN_PYTHON))))


def _read(path: Path, what: str, limit: int = 16 * 1024 * 1024) -> bytes:
    if path.is_symlink():
        raise AutograderError(f"{path} ({what}) is a symbolic link; give the file itself")
    try:
        with open(path, "rb") as f:
            data = f.read(limit + 1)
    except OSError as exc:
        raise AutograderError(f"cannot read {path} ({what}): {exc.strerror or exc}") from None
    if len(data) > limit:
        raise AutograderError(f"{path} ({what}) is over {limit >> 20} MiB; too large for the autograder archive")
    return data


def _add_packs(folders: tuple[Path, ...], members: dict[str, tuple[bytes, int]]) -> list[str]:
    """Each pack folder's check modules as ``packs/<folder name>/``, as ``--plugins`` loads them:
    the ``*.py`` files at its top, no ``__init__.py``, no links. The folder's name is the pack's name."""
    added: list[str] = []
    for folder in folders:
        folder = Path(folder)
        if not folder.is_dir():
            raise AutograderError(f"--plugins {folder}: not a folder; give the folder that holds the pack's check "
                                  "modules")
        name = folder.resolve().name
        where = f"{PACKS_DIR}/{name}"
        if where in added:
            raise AutograderError(f"two check packs are named {name}; a pack is named by its folder, so rename one "
                                  "of the folders")
        modules = sorted(p for p in folder.glob("*.py") if p.name != "__init__.py" and not p.is_symlink())
        if not modules:
            raise AutograderError(f"--plugins {folder}: holds no .py check modules")
        for module in modules:
            members[f"{where}/{module.name}"] = (_read(module, f"a module of the pack {name}"), 0o644)
        added.append(where)
    return added


def _write_zip(out_zip: Path, members: dict[str, tuple[bytes, int]]) -> None:
    """The archive, members sorted with fixed dates and Unix modes, written whole or not at all."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name in sorted(members):
            data, mode = members[name]
            info = zipfile.ZipInfo(name, date_time=_EPOCH)
            info.create_system = 3  # Unix: unzip applies the modes below (run_autograder must be executable)
            info.external_attr = (0o100000 | mode) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, data)
    try:
        fd, temporary = tempfile.mkstemp(prefix=f".{out_zip.name}.", dir=out_zip.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(buffer.getvalue())
            os.chmod(temporary, 0o644)
            os.replace(temporary, out_zip)
        except BaseException:
            os.unlink(temporary)
            raise
    except OSError as exc:
        raise AutograderError(f"cannot write {out_zip}: {exc.strerror or exc}; give a path in a folder you can "
                              "write to") from None


SETUP_SCRIPT = r"""#!/usr/bin/env bash
# Gradescope runs this once, as root, while it builds the autograder's image (Ubuntu). It installs the
# sandbox (bubblewrap) and a virtual environment in /autograder/venv with the CPU build of torch and the
# grader that built this archive, both pinned.
set -euo pipefail
ROOT="${AUTOGRADER_ROOT:-/autograder}"
SOURCE="$ROOT/source"
export DEBIAN_FRONTEND=noninteractive PIP_DISABLE_PIP_VERSION_CHECK=1
apt-get update
apt-get install -y --no-install-recommends bubblewrap ca-certificates python3 python3-venv
PYTHON=python3
if ! python3 -c 'import sys; sys.exit(sys.version_info < (@MIN_PYTHON@))'; then
    apt-get install -y --no-install-recommends python3.11 python3.11-venv
    PYTHON=python3.11
fi
"$PYTHON" -m venv "$ROOT/venv"
"$ROOT/venv/bin/python" -m pip install --no-cache-dir --index-url @TORCH_INDEX@ @TORCH@
"$ROOT/venv/bin/python" -m pip install --no-cache-dir @GRADER@
# fail here, once, rather than on every submission
"$ROOT/venv/bin/python" -I -c "import torch, grader.autograder_run"
"""

RUN_SCRIPT = r"""#!/usr/bin/env bash
# Gradescope runs this for every submission. It grades the files under $ROOT/submission with this
# archive's configuration and packs (see autograder.json) and always leaves $ROOT/results/results.json.
ROOT="${AUTOGRADER_ROOT:-/autograder}"
RESULTS="$ROOT/results"
mkdir -p "$RESULTS"
rm -f "$RESULTS/results.json"
# the submission's code runs as another user: it must not read the packs, the configuration or the secret
chmod -R go-rwx "$ROOT/source" 2>/dev/null
PYTHON=python3
if [ -x "$ROOT/venv/bin/python" ]; then
    PYTHON="$ROOT/venv/bin/python"
fi
"$PYTHON" -I -B -m grader.autograder_run --root "$ROOT"
status=$?
if [ ! -s "$RESULTS/results.json" ]; then
    echo "run_autograder: the grader exited with status $status and wrote no results.json" >&2
    cat > "$RESULTS/results.json" <<'JSON'
{"score": 0, "output": "The autograder could not run: the grader failed, not your submission. Please tell your instructor; the autograder's log says why.", "output_format": "text", "stdout_visibility": "hidden", "tests": []}
JSON
fi
exit 0
"""
