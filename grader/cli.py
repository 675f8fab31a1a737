"""``grade``: grade a submission folder and report on it."""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from dataclasses import replace
from pathlib import Path
from typing import Optional, Sequence

import grader
from grader.config import RunConfig

#: exit codes
OK = 0
BELOW_THRESHOLD = 1  # grading completed, score under --fail-under
USAGE_ERROR = 2
GRADER_FAILURE = 3  # the grader itself could not run (not the submission's fault)

DEMO_DIR = Path(__file__).resolve().parent / "demo"


def _skeletons_dir() -> Path:
    installed = Path(__file__).resolve().parent / "skeletons"
    return installed if installed.is_dir() else Path(__file__).resolve().parent.parent / "exercises"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="grade",
        description="Grade Dive into Deep Learning's recurrent-network exercises: a folder of .py files "
                    "whose functions are marked with `from grader import hookimpl`.",
        epilog="Exit status: 0 graded, 1 score below --fail-under, 2 usage error, 3 the grader could not run.",
    )
    parser.add_argument("submission", nargs="?", type=Path, help="folder with your .py files (e.g. exercises/)")
    parser.add_argument("--demo", action="store_true", help="grade a sample submission with two typical mistakes")
    parser.add_argument("--init", metavar="DIR", type=Path, help="copy the exercise skeletons into DIR and stop")
    parser.add_argument("--out", metavar="DIR", type=Path, help="write report.html and results.json (Gradescope) here")
    parser.add_argument("--corpus", metavar="PATH", type=Path,
                        help="train on this text file (book preprocessing) instead of the generated corpus")
    parser.add_argument("--fail-under", metavar="N", type=float, help="exit 1 when the score is below N (out of 100)")
    parser.add_argument("--timeout", metavar="SECONDS", type=float,
                        help="time limit for every check (default: each check's own, 10-40 s)")
    parser.add_argument("--hidden", action="store_true", help="also run hidden checks (instructors)")
    parser.add_argument("-v", "--verbose", action="store_true", help="list passing checks and details too")
    parser.add_argument("--color", choices=("auto", "always", "never"), default="auto")
    parser.add_argument("--version", action="version", version=f"rnn-grader {grader.__version__}")
    return parser


def _usage(parser: argparse.ArgumentParser, message: str) -> int:
    parser.print_usage(sys.stderr)
    print(f"grade: error: {message}", file=sys.stderr)
    return USAGE_ERROR


def _init(target: Path) -> int:
    source = _skeletons_dir()
    target.mkdir(parents=True, exist_ok=True)
    copied = []
    for path in sorted(source.glob("*.py")):
        dest = target / path.name
        if dest.exists():
            print(f"kept your existing {dest}")
            continue
        shutil.copyfile(path, dest)
        copied.append(dest.name)
    print(f"copied {len(copied)} skeleton(s) into {target}: {', '.join(copied) or 'none'}")
    print(f"next: implement the functions, then run `grade {target}`")
    return OK


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.init is not None:
        return _init(args.init)
    if args.demo == (args.submission is not None):
        return _usage(parser, "give a submission folder (e.g. `grade exercises/`) or --demo, not both")
    folder = DEMO_DIR if args.demo else args.submission
    if not folder.exists():
        return _usage(parser, f"{folder} does not exist")
    if not folder.is_dir():
        return _usage(parser, f"{folder} is a file; give the folder that holds your .py files")
    if not any(folder.glob("*.py")):
        return _usage(parser, f"{folder} has no .py files; run `grade --init {folder}` to start from the skeletons")
    if args.fail_under is not None and not 0 <= args.fail_under <= 100:
        return _usage(parser, "--fail-under takes a score from 0 to 100")
    if args.timeout is not None and args.timeout <= 0:
        return _usage(parser, "--timeout must be positive")
    if args.corpus is not None:
        from grader.corpus import CorpusError, load_corpus

        try:
            load_corpus(args.corpus)
        except CorpusError as exc:
            return _usage(parser, str(exc))
    color = args.color == "always" or (args.color == "auto" and sys.stdout.isatty() and "NO_COLOR" not in os.environ)
    config = RunConfig(corpus_path=args.corpus, out_dir=args.out, hidden=args.hidden, check_timeout=args.timeout,
                       verbose=args.verbose, color=color)
    return run(folder, config, args.fail_under)


def run(folder: Path, config: RunConfig, fail_under: Optional[float] = None) -> int:
    import torch

    from grader.judge import engine
    from grader.judge.runners import Runner, RunnerError
    from grader.plugins import get_plugin_manager

    torch.set_num_threads(1)  # the judge's reference runs must match the runner's
    if torch.cuda.is_available():
        config = replace(config, extra_devices=("cuda",))
    runner = Runner()
    try:
        runner.launch()  # imports torch while the judge prepares the reference
        pm = get_plugin_manager(reporters=True)
        the_plan = engine.plan(pm, config)
        engine.warm_up(the_plan)  # the reference's side of every check, while the runner starts
        report = engine.grade(folder, config, pm, runner, the_plan)
    except RunnerError as exc:
        print(f"grade: the grader could not run: {exc}", file=sys.stderr)
        return GRADER_FAILURE
    finally:
        runner.stop()
    if config.out_dir is not None:
        try:
            config.out_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            print(f"grade: cannot write to {config.out_dir}: {exc}", file=sys.stderr)
            return USAGE_ERROR
    pm.hook.grader_report(report=report, config=config)
    if fail_under is not None and report.percent < fail_under:
        print(f"score {report.percent:.1f} is below --fail-under {fail_under:g}")
        return BELOW_THRESHOLD
    return OK


def entry_point() -> None:
    sys.exit(main())
