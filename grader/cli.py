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
from grader.secret import SECRET_ENV

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
    parser.add_argument("--secret-seed", metavar="TEXT",
                        help="derive every generated input from this secret, so results computed at home do not "
                             f"match (instructors; or set {SECRET_ENV})")
    parser.add_argument("--authoritative", action="store_true",
                        help="this grade counts: refuse to run student code unless the sandbox isolates it")
    parser.add_argument("--allow-unisolated", action="store_true",
                        help="with --authoritative, grade even where the sandbox cannot run (the report says so)")
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
    if args.allow_unisolated and not args.authoritative:
        return _usage(parser, "--allow-unisolated only applies with --authoritative")
    secret = args.secret_seed if args.secret_seed is not None else os.environ.get(SECRET_ENV) or None
    if secret is not None and not secret.strip():
        return _usage(parser, "--secret-seed needs a non-empty text")
    config = RunConfig(corpus_path=args.corpus, out_dir=args.out, hidden=args.hidden, check_timeout=args.timeout,
                       verbose=args.verbose, color=color, secret=secret,
                       isolation="allow-open" if args.allow_unisolated else "require" if args.authoritative else "auto")
    return run(folder, config, args.fail_under)


def run(folder: Path, config: RunConfig, fail_under: Optional[float] = None) -> int:
    import torch

    from grader.judge import engine
    from grader.judge.runners import Runner, RunnerError
    from grader.plugins import get_plugin_manager

    torch.set_num_threads(1)  # the judge's reference runs must match the runner's
    if torch.cuda.is_available():
        config = replace(config, extra_devices=("cuda",))
    runner = None
    try:
        runner = Runner(sandbox="require" if config.isolation == "require" else "auto")
        runner.launch()  # imports torch while the judge prepares the reference
        pm = get_plugin_manager(reporters=True)
        the_plan = None  # with a secret the inputs depend on the submission: engine.grade plans once it is read
        if not config.secret:
            the_plan = engine.plan(pm, config)
            engine.warm_up(the_plan)  # the reference's side of every check, while the runner starts
        report = engine.grade(folder, config, pm, runner, the_plan)
    except RunnerError as exc:
        if config.isolation == "require":
            print(f"grade: --authoritative: this grade counts, so student code only runs isolated, and here it "
                  f"cannot be: {exc}. Install bubblewrap (Debian/Ubuntu: apt-get install bubblewrap) or allow user "
                  "namespaces; or pass --allow-unisolated to grade anyway (the report then says so)", file=sys.stderr)
        else:
            print(f"grade: the grader could not run: {exc}", file=sys.stderr)
        return GRADER_FAILURE
    finally:
        if runner is not None:
            runner.stop()
    if config.isolation == "allow-open" and not runner.isolated:
        report = replace(report, notices=report.notices + (UNISOLATED,))
    if config.out_dir is not None:
        try:
            config.out_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            _warn(f"grade: cannot write to {config.out_dir}: {exc}; give --out a folder you can write to")
            write_reports(pm, report, replace(config, out_dir=None))  # the summary still shows the grade
            return USAGE_ERROR
    write_reports(pm, report, config)
    if fail_under is not None and report.percent < fail_under:
        print(f"score {report.percent:.1f} is below --fail-under {fail_under:g}")
        return BELOW_THRESHOLD
    return OK


#: said in the report of an --authoritative grade that ran without the sandbox (--allow-unisolated)
UNISOLATED = ("not isolated: this grade was computed without the sandbox (--allow-unisolated), so the submission "
              "could have read the reference solutions; do not rely on it")
#: what each built-in reporter makes, named when it fails
_REPORTER_OUTPUT = {
    "grader.report.terminal": "the terminal summary",
    "grader.report.html": "the html report",
    "grader.report.gradescope": "results.json (Gradescope)",
}


def write_reports(pm, report, config: RunConfig) -> bool:
    """Call each reporter on its own, so one that fails is named on stderr and the others still run.

    True when every reporter succeeded.
    """
    caller = pm.hook.grader_report
    impls = caller.get_hookimpls()
    if any(impl.hookwrapper or impl.wrapper for impl in impls):  # a wrapper needs pluggy's own call
        return _guarded("the reports", caller, report=report, config=config)
    given = dict(report=report, config=config)
    ok = True
    for impl in reversed(impls):  # pluggy's order: the last registered first, trylast ones at the end
        args = [given[name] for name in impl.argnames]
        kwargs = {name: given[name] for name in impl.kwargnames if name in given}
        what = _REPORTER_OUTPUT.get(impl.plugin_name, f"the report of plugin {impl.plugin_name}")
        ok = _guarded(what, impl.function, *args, **kwargs) and ok
    return ok


def _guarded(what: str, function, *args, **kwargs) -> bool:
    """Call one reporter; a failure becomes a line on stderr naming ``what`` was not written."""
    try:
        function(*args, **kwargs)
    except Exception as exc:  # noqa: BLE001 - a failing reporter must not cost the other reports
        from grader.report.formatting import one_line

        advice = ("check that the output folder is writable and has free space" if isinstance(exc, OSError)
                  else "this is a bug in the grader or a plugin; please report it")
        _warn(f"grade: {what} could not be written: {one_line(f'{type(exc).__name__}: {exc}', 300)}; {advice}")
        return False
    return True


def _warn(text: str) -> None:
    """One line on stderr, with what its encoding cannot show escaped."""
    stream = sys.stderr
    encoding = getattr(stream, "encoding", None) or "utf-8"
    try:
        print(text.encode(encoding, "backslashreplace").decode(encoding), file=stream, flush=True)
    except (OSError, ValueError, LookupError):  # no usable stderr: nothing more to do
        pass


def entry_point() -> None:
    sys.exit(main())
