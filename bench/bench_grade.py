"""How long a student waits: wall time of `grade` on a full correct submission.

    python bench/bench_grade.py [--repeat 3]

Runs the real command line (`python -m grader reference/`) in a fresh process
each time, so interpreter and torch start-up are included, and prints each run,
the median, and the share of it spent before grading starts.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def time_command(args: list[str]) -> float:
    start = time.perf_counter()
    done = subprocess.run(args, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"command failed ({done.returncode}):\n{done.stdout}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    startup = [time_command([sys.executable, "-c", "import torch"]) for _ in range(args.repeat)]
    runs = [time_command([sys.executable, "-m", "grader", "reference/"]) for _ in range(args.repeat)]
    median = statistics.median(runs)
    print(f"grade reference/ (full correct submission, {len(runs)} runs): "
          + ", ".join(f"{r:.2f}s" for r in runs))
    print(f"median {median:.2f}s; `import torch` alone takes {statistics.median(startup):.2f}s "
          f"({statistics.median(startup) / median:.0%} of a grading)")
    print(f"target: under 10 s on a 2-core machine -> {'met' if median < 10 else 'NOT met'}")


if __name__ == "__main__":
    main()
