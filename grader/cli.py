"""``grade``: grade a submission folder and report on it."""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional, Sequence

import grader
from grader.config import RunConfig
from grader.report.dispatch import warn as _warn, write_reports
from grader.secret import SECRET_ENV

if TYPE_CHECKING:  # pragma: no cover
    from grader.judge.single import Graded
    from grader.results import GradingReport

#: exit codes
OK = 0
BELOW_THRESHOLD = 1  # grading completed, score under --fail-under
USAGE_ERROR = 2
GRADER_FAILURE = 3  # the grader itself could not run (not the submission's fault)
INTERRUPTED = 130  # --batch stopped by Ctrl-C; running it again continues where it stopped

DEMO_DIR = Path(__file__).resolve().parent / "demo"
#: where ``grade --init-ci`` writes the workflow by default
DEFAULT_WORKFLOW = Path(".github/workflows/grade.yml")


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
    parser.add_argument("submission", nargs="?", type=Path,
                        help="folder with your .py files or notebooks (e.g. exercises/), or one notebook or .py file")
    parser.add_argument("--demo", action="store_true", help="grade a sample submission with two typical mistakes")
    parser.add_argument("--init", metavar="DIR", type=Path, help="copy the exercise skeletons into DIR and stop")
    parser.add_argument("--out", metavar="DIR", type=Path, help="write report.html and results.json (Gradescope) here")
    parser.add_argument("--watch", action="store_true",
                        help="grade, then grade again whenever you save a .py file or notebook in the folder, showing only what "
                             "changed (with -v the whole report each time; --out files are rewritten); Ctrl-C stops")
    batch = parser.add_argument_group("grading a class (instructors)")
    batch.add_argument("--batch", metavar="SUBMISSIONS", type=Path,
                       help="grade every student in this folder (a folder, .zip, .tar.gz, .py or .ipynb per student; "
                            "Gradescope exports and flat LMS downloads are recognised) into --out")
    batch.add_argument("--jobs", metavar="N", type=int, help="students graded at once (default: one per core)")
    batch.add_argument("--force", action="store_true", help="grade every student again, even if unchanged")
    batch.add_argument("--only", metavar="STUDENT", action="append", default=[],
                       help="grade only this student (again); repeat for more")
    parser.add_argument("--corpus", metavar="PATH", type=Path,
                        help="train on this text file (book preprocessing) instead of the generated corpus")
    parser.add_argument("--fail-under", metavar="N", type=float, help="exit 1 when the score is below N (out of 100)")
    parser.add_argument("--timeout", metavar="SECONDS", type=float,
                        help="time limit for every check (default: each check's own, 10-40 s)")
    course = parser.add_argument_group("course setup (instructors)")
    course.add_argument("--config", metavar="FILE", type=Path,
                        help="course configuration: a grader.toml, or a pyproject.toml with [tool.grader] (default: "
                             "the one next to the submission, else in the working directory)")
    course.add_argument("--no-config", action="store_true", help="ignore course configurations; grade with the defaults")
    course.add_argument("--plugins", metavar="PATH", type=Path, action="append", default=[],
                        help="load the check modules in this folder (a check pack); repeat for more")
    course.add_argument("--list-checks", action="store_true", help="list every check with its points, pack and visibility")
    course.add_argument("--explain", metavar="CHECK", help="say what a check checks and how it scores, then stop")
    course.add_argument("--hidden", action="store_true", help="also run hidden checks (instructors)")
    course.add_argument("--secret-seed", metavar="TEXT",
                        help="derive every generated input from this secret, so results computed at home do not "
                             f"match (instructors; or set {SECRET_ENV})")
    course.add_argument("--authoritative", action="store_true",
                        help="this grade counts: refuse to run student code unless the sandbox isolates it")
    course.add_argument("--allow-unisolated", action="store_true",
                        help="with --authoritative, grade even where the sandbox cannot run (the report says so)")
    course.add_argument("--gradescope-autograder", metavar="OUT.zip", type=Path,
                        help="build a Gradescope autograder archive (setup.sh, run_autograder, this configuration "
                             "and the --plugins packs) and stop")
    ci = parser.add_argument_group("pull requests and CI")
    ci.add_argument("--junit", metavar="FILE", type=Path, help="also write a JUnit XML report (one test case per check)")
    ci.add_argument("--base", metavar="REF",
                    help="git ref the pull request is based on: files it changed outside the exercise files make "
                         "the result untrustworthy, and are listed")
    ci.add_argument("--init-ci", metavar="FILE", type=Path, nargs="?", const=DEFAULT_WORKFLOW,
                    help=f"write a GitHub Actions workflow that grades pull requests (default: {DEFAULT_WORKFLOW}) and stop")
    parser.add_argument("-v", "--verbose", action="store_true", help="list passing checks and details too")
    parser.add_argument("-q", "--quiet", action="store_true",
                        help="no progress line while a folder is graded and no notes under its score (report.html and "
                             "results.json keep the notes); the checks and the score print as usual")
    parser.add_argument("--color", choices=("auto", "always", "never"), default="auto",
                        help="colour in the terminal; auto: on a terminal, unless NO_COLOR is set or FORCE_COLOR "
                             "forces it (CI logs are plain)")
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
    if args.watch and (problem := _watch_problem(args)):
        return _usage(parser, problem)
    if args.init is not None:
        return _init(args.init)
    if args.batch is None and (args.jobs is not None or args.force or args.only):
        return _usage(parser, "--jobs, --force and --only apply to --batch SUBMISSIONS/ --out RESULTS/")
    if args.config is not None and args.no_config:
        return _usage(parser, "give --config FILE or --no-config, not both")
    if args.init_ci is not None or args.gradescope_autograder is not None or args.list_checks or args.explain:
        return _course_command(parser, args)
    if not hasattr(os, "fork"):  # the runner forks one process per run of student code
        print("grade: grading needs fork(), which this system lacks: use Linux or macOS (on Windows, run grade "
              "inside WSL)", file=sys.stderr)
        return GRADER_FAILURE
    if args.batch is not None:
        problem = _batch_problem(args)
        if problem:
            return _usage(parser, problem)
        # next to the submissions, never inside them: a student's own configuration must not grade the class
        config = _config(parser, args, places=(args.batch.parent, Path.cwd()))
        return config if isinstance(config, int) else run_batch(args, config)
    if args.demo == (args.submission is not None):
        return _usage(parser, "give a submission folder (e.g. `grade exercises/`) or --demo, not both")
    folder = DEMO_DIR if args.demo else args.submission
    if not folder.exists():
        return _usage(parser, f"{folder} does not exist")
    single = folder.suffix in (".py", ".ipynb") and folder.is_file()  # `grade my.ipynb`: that file alone
    if not folder.is_dir() and not single:
        return _usage(parser, f"{folder} is a file; give the folder that holds your .py files (or one notebook "
                              "or .py file: `grade my.ipynb`)")
    if not single and not any(folder.glob("*.py")) and not any(folder.glob("*.ipynb")):
        from grader.judge.loading import no_py_files

        return _usage(parser, no_py_files(folder, str(folder)))
    if args.fail_under is not None and not 0 <= args.fail_under <= 100:
        return _usage(parser, "--fail-under takes a score from 0 to 100")
    # an authoritative grade never takes its configuration from the submission's own folder
    home = folder.parent if single else folder
    places = (Path.cwd(),) if args.authoritative or args.demo else (home, home.parent, Path.cwd())
    config = _config(parser, args, places=places)
    if isinstance(config, int):
        return config
    if args.watch:
        return run_watch(folder, config)
    fail_under = args.fail_under
    if fail_under is None and config.course is not None:
        fail_under = config.course.fail_under
    return run(folder, config, fail_under, base=args.base)


def _watch_problem(args: argparse.Namespace) -> Optional[str]:
    """What --watch cannot go with, if anything is given with it."""
    others = [flag for flag, given in (
        ("--batch", args.batch is not None), ("--demo", args.demo), ("--init", args.init is not None),
        ("--init-ci", args.init_ci is not None), ("--gradescope-autograder", args.gradescope_autograder is not None),
        ("--list-checks", args.list_checks), ("--explain", args.explain is not None),
        ("--fail-under", args.fail_under is not None), ("--base", args.base is not None)) if given]
    if others:
        return (f"--watch grades your folder again on every save until Ctrl-C; give it without {others[0]} "
                "(e.g. `grade --watch my_rnn/`)")
    return None


def _course_command(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    """--list-checks, --explain, --init-ci and --gradescope-autograder: each works on the course setup and stops."""
    chosen = [flag for flag, given in (("--list-checks", args.list_checks), ("--explain", args.explain),
                                       ("--init-ci", args.init_ci is not None),
                                       ("--gradescope-autograder", args.gradescope_autograder is not None)) if given]
    if len(chosen) > 1:
        return _usage(parser, f"{' and '.join(chosen)} each stop after their work; give one of them")
    if args.batch is not None or args.demo:
        return _usage(parser, f"{chosen[0]} works on the course setup; give it without --batch or --demo")
    places = tuple(p for p in (args.submission, Path.cwd()) if p is not None)
    config = _config(parser, args, places=places)
    if isinstance(config, int):
        return config
    if args.init_ci is not None:
        from grader.ci import CIError, write_workflow

        try:
            written = write_workflow(args.init_ci, config.course)
        except CIError as exc:
            return _course_error(exc)
        print(f"wrote {written}; commit it to the course repository (the README's \"Pull requests\" section says more)")
        return OK
    if args.gradescope_autograder is not None:
        from grader.autograder import AutograderError, build_archive

        try:
            built = build_archive(args.gradescope_autograder, config)
        except AutograderError as exc:
            return _course_error(exc)
        print(f"wrote {built}; upload it as the assignment's autograder on Gradescope (\"Zip file upload\")")
        return OK
    from grader.course import CourseError
    from grader.judge.single import judge_setup
    from grader.packs import PackError
    from grader.report import catalog

    try:
        _, pm = judge_setup(config)
        if args.explain:
            return catalog.explain(pm, config, args.explain, sys.stdout)
        return catalog.list_checks(pm, config, sys.stdout)
    except (CourseError, PackError) as exc:
        return _course_error(exc)
    except catalog.UnknownCheck as exc:
        return _usage(parser, str(exc))


def _course_error(exc: Exception) -> int:
    print(f"grade: error: {exc}", file=sys.stderr)
    return USAGE_ERROR


def use_color(choice: str, stream: Any = None) -> bool:
    """Colour for ``--color auto|always|never``: NO_COLOR turns it off, FORCE_COLOR on, else only on a terminal."""
    if choice != "auto":
        return choice == "always"
    if os.environ.get("NO_COLOR"):
        return False
    if os.environ.get("FORCE_COLOR", "").strip().lower() not in ("", "0", "false", "no"):
        return True
    stream = sys.stdout if stream is None else stream
    try:
        return bool(stream.isatty()) and os.environ.get("TERM") != "dumb"
    except (AttributeError, ValueError):
        return False


def _config(parser: argparse.ArgumentParser, args: argparse.Namespace,
            places: Sequence[Path] = ()) -> "RunConfig | int":
    """The run's settings from the options and the course configuration, or the usage error's exit code."""
    from grader.course import CourseError, find_course, load_course

    if args.timeout is not None and args.timeout <= 0:
        return _usage(parser, "--timeout must be positive")
    course = None
    try:
        if args.config is not None:
            course = load_course(args.config)
        elif not args.no_config:
            found = find_course(places)
            course = load_course(found) if found is not None else None
    except CourseError as exc:
        return _course_error(exc)
    corpus = args.corpus if args.corpus is not None else (course.corpus if course is not None else None)
    if corpus is not None:
        from grader.corpus import CorpusError, load_corpus

        try:
            load_corpus(corpus)
        except CorpusError as exc:
            return _usage(parser, str(exc))
    for folder in args.plugins:
        if not folder.is_dir():
            return _usage(parser, f"--plugins {folder}: not a folder; give the folder that holds the pack's check modules")
    if args.allow_unisolated and not args.authoritative:
        return _usage(parser, "--allow-unisolated only applies with --authoritative")
    secret = args.secret_seed if args.secret_seed is not None else os.environ.get(SECRET_ENV) or None
    if secret is not None and not secret.strip():
        return _usage(parser, "--secret-seed needs a non-empty text")
    config = RunConfig(corpus_path=corpus, out_dir=args.out, hidden=args.hidden, check_timeout=args.timeout,
                       verbose=args.verbose, color=use_color(args.color), quiet=args.quiet, secret=secret,
                       isolation="allow-open" if args.allow_unisolated else "require" if args.authoritative else "auto",
                       course=course,
                       junit_path=args.junit, plugin_dirs=tuple(p.resolve() for p in args.plugins))
    return config


def _batch_problem(args: argparse.Namespace) -> Optional[str]:
    """What is wrong with a --batch command line, if anything."""
    if args.submission is not None or args.demo:
        return "--batch grades a folder of submissions; give it alone (`grade --batch SUBMISSIONS/ --out RESULTS/`)"
    if args.out is None:
        return "--batch needs --out RESULTS/: the folder for every student's report, gradebook.csv and summary.html"
    if not args.batch.is_dir():
        return f"{args.batch} is not a folder; give the folder that holds one entry per student"
    if args.fail_under is not None:
        return "--fail-under applies to a single grading; the gradebook has every student's score"
    if args.jobs is not None and args.jobs < 1:
        return "--jobs takes a number of students graded at once, 1 or more"
    submissions, out = args.batch.resolve(), args.out.resolve()
    if out == submissions or submissions in out.parents:
        return f"--out {args.out} is inside {args.batch}; put the results elsewhere, or they would be graded as students"
    return None


def run(folder: Path, config: RunConfig, fail_under: Optional[float] = None, base: Optional[str] = None) -> int:
    from grader.course import CourseError
    from grader.judge.runners import RunnerError
    from grader.judge.single import grade_folder
    from grader.packs import PackError
    from grader.report.progress_line import progress_line

    untrusted: tuple[str, ...] = ()
    if base is not None:
        from grader.ci import CIError, changed_outside

        try:
            untrusted = tuple(changed_outside(folder, base))
        except CIError as exc:
            print(f"grade: error: --base {base}: {exc}", file=sys.stderr)
            return USAGE_ERROR
    progress = progress_line(sys.stderr, str(folder), config.quiet)
    try:
        graded = grade_folder(folder, config, progress=progress)
    except RunnerError as exc:
        return _runner_failed(exc, config)
    except (CourseError, PackError) as exc:
        return _course_error(exc)
    finally:
        if progress is not None:  # wiped before anything else prints
            progress.close()
    report, pm, config = reported(graded), graded.pm, graded.config
    if untrusted:
        report = replace(report, untrusted=untrusted, notices=(untrusted_notice(untrusted),) + report.notices)
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


def reported(graded: "Graded") -> "GradingReport":
    """The report of a grading as the terminal and the files show it: an --authoritative grade computed
    without the sandbox says so."""
    if graded.config.isolation == "allow-open" and not graded.isolated:
        return replace(graded.report, notices=graded.report.notices + (UNISOLATED,))
    return graded.report


def run_watch(folder: Path, config: RunConfig) -> int:
    """``grade --watch DIR``: grade, then again on every save, until Ctrl-C."""
    from grader.course import CourseError
    from grader.judge.runners import RunnerError
    from grader.packs import PackError
    from grader.watch import watch

    try:
        return watch(folder, config)
    except RunnerError as exc:
        return _runner_failed(exc, config)
    except (CourseError, PackError) as exc:
        return _course_error(exc)


def run_batch(args: argparse.Namespace, config: RunConfig) -> int:
    """``grade --batch SUBMISSIONS/ --out RESULTS/``: every student, then the class files."""
    from grader.judge.single import judge_setup
    from grader.course import CourseError
    from grader.packs import PackError
    from grader.judge.batch import BatchOptions, BatchUsageError, default_jobs, run_batch as grade_class
    from grader.judge.runners import RunnerError

    # the instructor's grade: hidden checks count
    try:
        config, pm = judge_setup(replace(config, hidden=True))
    except PackError as exc:
        return _course_error(exc)
    pm.unregister(name="grader.report.terminal")  # one line per student instead of a summary each
    options = BatchOptions(submissions=args.batch, out=args.out, config=config, jobs=args.jobs or default_jobs(),
                           force=args.force, only=tuple(args.only),
                           sandbox="require" if config.isolation == "require" else "auto")
    try:
        outcome = grade_class(options, pm)
    except (BatchUsageError, CourseError) as exc:
        print(f"grade: error: {exc}", file=sys.stderr)
        return USAGE_ERROR
    except RunnerError as exc:
        return _runner_failed(exc, config)
    except OSError as exc:
        _warn(f"grade: cannot write to {args.out}: {exc}; give --out a folder you can write to")
        return USAGE_ERROR
    for notice in dict.fromkeys(outcome.notices):
        print(f"note: {notice}")
    print(f"{outcome.graded} graded, "
          + (f"{outcome.not_gradable} with nothing to grade (see their status), " if outcome.not_gradable else "")
          + f"{outcome.skipped} unchanged and skipped"
          + (f", {outcome.failed_to_grade} not graded because of the grader (run again)" if outcome.failed_to_grade else "")
          + f" in {outcome.seconds:.0f} s; see {args.out / 'gradebook.csv'} and {args.out / 'summary.html'}")
    if outcome.interrupted:
        print("interrupted: students in progress were not recorded; run the same command again to continue",
              file=sys.stderr)
        return INTERRUPTED
    return GRADER_FAILURE if outcome.failed_to_grade else OK


def _runner_failed(exc: Exception, config: RunConfig) -> int:
    if config.isolation == "require":
        print(f"grade: --authoritative: this grade counts, so student code only runs isolated, and here it "
              f"cannot be: {exc}. Install bubblewrap (Debian/Ubuntu: apt-get install bubblewrap) or allow user "
              "namespaces; or pass --allow-unisolated to grade anyway (the report then says so)", file=sys.stderr)
    else:
        print(f"grade: the grader could not run: {exc}", file=sys.stderr)
    return GRADER_FAILURE


#: said in the report of an --authoritative grade that ran without the sandbox (--allow-unisolated)
UNISOLATED = ("not isolated: this grade was computed without the sandbox (--allow-unisolated), so the submission "
              "could have read the reference solutions; do not rely on it")


def untrusted_notice(files: Sequence[str]) -> str:
    """Said first in a report whose pull request changed files outside the exercise files."""
    shown = ", ".join(files[:10]) + (f" and {len(files) - 10} more" if len(files) > 10 else "")
    return (f"untrustworthy: this pull request changed files outside the exercise files ({shown}); "
            "the grade shown here may not be the grader's own, so the instructor's grading decides")


def entry_point() -> None:
    sys.exit(main())
