"""How fast a class is graded: `grade --batch` on N correct submissions and a mix of buggy and hostile ones.

    python bench/bench_batch.py                 # 20 correct + 6 others, 1 and 2 workers
    python bench/bench_batch.py --correct 100 --jobs 2   # the README's figure

Every correct copy differs by a comment, so none is skipped as unchanged. Prints, measured in one run:
the wall time and submissions per minute for each worker count, a single `grade` of a correct
submission next to `python -c "import torch"` and their ratio, start-up (runners ready and the
reference computed) as a share of the batch, the CPU per submission split into the judge, the
runners' start-up and the forked children (the student's code and its harness), and the peak memory
of the whole process tree.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
REFERENCE = REPO / "reference"

#: single mistakes (file, old, new) and hostile files; each becomes one student
BUGGY = {
    "relu": ("rnn_scratch.py", "torch.tanh(", "torch.relu("),
    "no_clip": ("grad_clipping.py", "param.grad[:] *= theta / norm", "pass"),
    "no_bias": ("rnn_scratch.py", "+ b_q)", ")"),
}
HOSTILE = {
    "prints": ("predict.py", "\n", "\nprint('x' * 10_000_000)\n"),
    "crash": ("sine_wave.py", "\n", "\nimport os\nos._exit(3)\n"),
    "hang": ("gradient_flow.py", "\n", "\nwhile True:\n    pass\n"),
}


def build_class(root: Path, correct: int) -> Path:
    submissions = root / "submissions"
    submissions.mkdir(parents=True)
    sources = {p.name: p.read_text() for p in REFERENCE.glob("*.py") if p.name != "__init__.py"}
    for i in range(correct):
        folder = submissions / f"student{i:03d}"
        folder.mkdir()
        for name, text in sources.items():
            (folder / name).write_text(text + (f"\n# student {i}\n" if name == "rnn_scratch.py" else ""))
    for label, (file, old, new) in {**BUGGY, **HOSTILE}.items():
        folder = submissions / label
        folder.mkdir()
        for name, text in sources.items():
            (folder / name).write_text(text.replace(old, new, 1) if name == file else text)
    return submissions


class TreeMemory:
    """Peak resident memory of this process and all its descendants, sampled every 50 ms."""

    def __init__(self) -> None:
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self) -> "TreeMemory":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _sample(self) -> None:
        while not self._stop.wait(0.05):
            self.peak = max(self.peak, int(_tree(os.getpid(), "rss")))


def _tree(root: int, field: str) -> float:
    """The sum of ``field`` ("rss" bytes or "cpu" seconds) over ``root`` and its descendants, from /proc."""
    parents, values = {}, {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat", "rb") as f:
                    fields = f.read().rsplit(b")", 1)[1].split()
            except OSError:
                continue
            parents[int(entry)] = int(fields[1])
            values[int(entry)] = (int(fields[21]) * os.sysconf("SC_PAGE_SIZE") if field == "rss"
                                  else (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK"))
    total, todo = 0.0, [root]
    while todo:
        pid = todo.pop()
        total += values.get(pid, 0)
        todo += [child for child, parent in parents.items() if parent == pid]
    return total


def time_command(args: list[str]) -> float:
    start = time.perf_counter()
    done = subprocess.run(args, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if done.returncode != 0:
        sys.exit(f"command failed ({done.returncode}):\n{done.stdout[-3000:]}")
    return time.perf_counter() - start


def runner_startup_cpu() -> float:
    """CPU seconds one runner takes to start (torch imported, warmed up), measured alone."""
    from grader.judge.runners import Runner

    with Runner() as runner:
        runner.start()
        return _tree(runner.proc.pid, "cpu")


def grade_class(submissions: Path, out: Path, jobs: int) -> dict:
    import torch

    from grader.config import RunConfig
    from grader.judge import batch, records
    from grader.plugins import get_plugin_manager

    torch.set_num_threads(1)
    pm = get_plugin_manager(reporters=True)
    pm.unregister(name="grader.report.terminal")
    options = batch.BatchOptions(submissions=submissions, out=out, config=RunConfig(), jobs=jobs, force=True,
                                 progress=False)
    judge_before = time.process_time()
    start = time.perf_counter()
    with TreeMemory() as memory:
        outcome = batch.run_batch(options, pm, say=lambda line: None)
    wall = time.perf_counter() - start
    done = records.read_all(out)
    return {
        "wall": wall, "outcome": outcome, "peak": memory.peak, "records": done,
        "judge_cpu": time.process_time() - judge_before,
        "child_cpu": sum(r.get("cpu_seconds") or 0.0 for r in done.values()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--correct", type=int, default=20, help="correct submissions (default 20)")
    parser.add_argument("--jobs", type=int, nargs="*", default=[1, 2], help="worker counts to compare (default 1 2)")
    parser.add_argument("--no-mix", action="store_true", help="correct submissions only")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bench-batch-"))
    try:
        submissions = build_class(root, args.correct)
        if args.no_mix:
            for label in {**BUGGY, **HOSTILE}:
                shutil.rmtree(submissions / label)
        count = len(list(submissions.iterdir()))
        torch_import = statistics.median(time_command([sys.executable, "-c", "import torch"]) for _ in range(3))
        single = statistics.median(time_command([sys.executable, "-m", "grader", str(submissions / "student000")])
                                   for _ in range(3))
        print(f"python -c 'import torch': {torch_import:.2f} s; one `grade` of a correct submission: {single:.2f} s "
              f"({single / torch_import:.2f}x)")
        startup_cpu = runner_startup_cpu()
        for jobs in args.jobs:
            result = grade_class(submissions, root / f"results-{jobs}", jobs)
            outcome, wall = result["outcome"], result["wall"]
            statuses: dict[str, int] = {}
            for record in result["records"].values():
                statuses[record["status"]] = statuses.get(record["status"], 0) + 1
            startup = outcome.startup_seconds
            runners_started = outcome.runner_starts
            children = result["child_cpu"]
            print(f"\n{count} submissions ({args.correct} correct), {jobs} worker(s): {wall:.1f} s wall, "
                  f"{60 * count / wall:.0f} submissions/minute, {wall / count:.2f} s each")
            print(f"  statuses: {', '.join(f'{k} {v}' for k, v in sorted(statuses.items()))}")
            print(f"  start-up (runners ready, reference computed): {startup:.1f} s = {100 * startup / wall:.1f}% of the batch")
            print(f"  CPU per submission: judge {result['judge_cpu'] / count:.2f} s, runner start-up "
                  f"{startup_cpu * runners_started / count:.2f} s ({runners_started} started), children (the student's "
                  f"code and its harness) {children / count:.2f} s")
            print(f"  peak memory of the process tree: {result['peak'] / 2**20:.0f} MiB")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
