"""How fast `grade --watch` answers a save, next to its first grading.

    python bench/bench_watch.py             # 4 saves
    python bench/bench_watch.py --saves 8

Starts `grade --watch` on a copy of the reference with one mistake in rnn_scratch.py, then saves the
file alternately fixed and broken. Prints the first grading (process start to its score: torch's
start-up, the runner's, the reference's side and the checks) and each regrade from the save to the
new score (the wait for the editor's burst of changes to settle included), with their medians and
the ratio, and the grader's own "graded again in" figure (the grading alone).
"""

from __future__ import annotations

import argparse
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
REFERENCE = REPO / "reference"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--saves", type=int, default=4)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as root:
        folder = Path(root) / "my_rnn"
        folder.mkdir()
        for path in REFERENCE.glob("*.py"):
            if path.name != "__init__.py":
                shutil.copyfile(path, folder / path.name)
        correct = (folder / "rnn_scratch.py").read_text()
        broken = correct.replace("H = torch.tanh(", "H = torch.relu(")
        (folder / "rnn_scratch.py").write_text(broken)
        lines: list[str] = []
        started = time.monotonic()
        proc = subprocess.Popen([sys.executable, "-m", "grader", "--watch", str(folder)], cwd=REPO,
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True).start()

        def scores() -> int:
            return sum(line.startswith(("Score:", "no change")) for line in lines)

        def wait(count: int) -> None:
            while scores() < count:
                if proc.poll() is not None:
                    sys.exit(f"grade --watch ended with {proc.returncode}:\n{''.join(lines)}")
                time.sleep(0.02)

        try:
            wait(1)
            first = time.monotonic() - started
            regrades = []
            for i in range(args.saves):
                time.sleep(1.0)
                saved = time.monotonic()
                (folder / "rnn_scratch.py").write_text(correct if i % 2 == 0 else broken)
                wait(2 + i)
                regrades.append(time.monotonic() - saved)
            proc.send_signal(signal.SIGINT)
            proc.wait(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
    graded = [float(s) for s in re.findall(r"graded again in ([\d.]+) s", "".join(lines))]
    print(f"first grading (process start to score): {first:.2f} s")
    print(f"regrades (save to score): {', '.join(f'{s:.2f}' for s in regrades)} s; "
          f"median {statistics.median(regrades):.2f} s, {first / statistics.median(regrades):.1f}x faster")
    if graded:
        print(f"the grader's own 'graded again in': median {statistics.median(graded):.2f} s")


if __name__ == "__main__":
    main()
