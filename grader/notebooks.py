"""A Jupyter notebook read as a Python module the grader can load, with every line mapped back to its cell.

A notebook is read with ``nbformat`` (older formats are upgraded). Its code cells, in order, become one
module, under these rules:

- **IPython syntax is dropped**: ``%line magics``, ``!shell`` lines, ``x = !cmd``, ``?help`` and
  ``get_ipython()`` lines; a cell under a cell magic that is not Python (``%%bash``, ``%%writefile``) is
  left out; ``%%time``, ``%%timeit`` and ``%%capture`` lose their magic line and keep their body.
- **Definitions are kept, work is left out.** Loading the module must not train, plot, read files or reach
  the network, as a script's top-level work belongs under ``if __name__ == "__main__":``. Each top-level
  statement of a cell is kept when it only defines something: an import, a ``def``, a ``class``, an
  ``if __name__ == "__main__":`` block, or an assignment whose value is simple: constants, names already
  defined, arithmetic, containers and comprehensions of those, and calls of a few cheap functions
  (``torch.device(...)``, ``nn.RNN(...)``, ``len``, ``getattr``, ``math.*``, ``logging.getLogger``,
  ``types.SimpleNamespace``) or of a notebook class whose constructor Python generates and that runs no
  notebook code (a ``@dataclass`` or ``NamedTuple`` without its own ``__init__``, ``__post_init__`` or
  ``default_factory``, a ``namedtuple``). An ``if``/``try`` block is kept when its statements are; a bare
  expression in it (``print(device)``) becomes ``pass``. A tuple assignment of a tuple keeps its simple
  parts (``vocab_size, num_hiddens = len(vocab), 256`` keeps ``num_hiddens = 256``).
  Any other statement (a call such as ``train_ch8(...)`` or ``d2l.plot(...)``, a loop, an assignment from
  a function call such as ``vocab = load_data(...)``, an assignment to an imported module's attribute or
  item such as ``plt.rcParams[...] = ...``) is left out, and so is an assignment that reads a name only
  left-out code defines. Statements sharing a line (``import torch; print(...)``) are ruled one by one.
  A function that uses such a name is named in a warning, since it would fail when called; one that reads
  it when it is defined (a default value, decorator or annotation) is an error, since loading fails.
- **Imports nothing kept uses are left out**, so a plotting cell's ``import matplotlib.pyplot as plt`` does
  not need matplotlib where the grading runs.
- **Tags decide when the rule should not**: a cell tagged ``grader-skip`` is left out whole; one tagged
  ``grader-keep`` is kept whole, as written (minus IPython syntax).
- A cell that is not valid Python is kept as written when it holds a ``def``, ``class`` or decorator, so the
  loader reports its syntax error at its line; otherwise it is left out, with an error naming its line, so
  a half-typed scratch cell does not cost the rest of the notebook. ``%run`` lines are dropped with a warning.

Cells are numbered as a student sees them: the cell's position in the notebook, 1-based, counting every
cell (markdown ones too): "cell 7, line 3". Cells taken from a kernel's input history are labelled by
their execution count instead: "In [7], line 3". :meth:`Converted.where` turns a line of the generated
module into that text, and :func:`point_at_notebooks` rewrites a whole report with it.
"""

from __future__ import annotations

import ast
import re
import warnings
from dataclasses import dataclass, field, replace
from typing import Iterable, Mapping, Optional, Sequence, Union

from grader.notebook_rule import (BUILTINS, Known, bound_names, defines, free_names, import_used, imported_modules,
                                  loaded_names, read_when_defined, record_names, span, split_assignment)
from grader.results import FileProblem, GradingReport

#: a cell tagged so is left out whole, or kept whole, whatever the rule says
SKIP_TAG, KEEP_TAG = "grader-skip", "grader-keep"
#: the largest notebook read (outputs with images make notebooks large; only the code is graded)
NOTEBOOK_LIMIT = 16 * 1024 * 1024
#: cell magics whose body is plain Python: the magic line goes, the body stays
PYTHON_CELL_MAGICS = ("time", "timeit", "capture", "prun")
#: ``x = !ls``, ``files = %sx ls``: IPython's assignment from a shell or magic
_MAGIC_ASSIGNMENT = re.compile(r"^[A-Za-z_][\w.]*(\s*,\s*[A-Za-z_][\w.]*)*\s*=\s*[%!]")
#: ``name?``, ``name??``, ``?name``: IPython's help
_HELP = re.compile(r"^(\?\??[\w.]*|[\w.]+\?\??)$")


class NotebookError(ValueError):
    """The file is not a notebook that can be read; the message says why and what to do."""


@dataclass(frozen=True)
class Cell:
    """A code cell: how the student sees it labelled, its source and its tags."""

    label: str
    source: str
    tags: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Converted:
    """A notebook as one Python module, and where each of its lines came from."""

    #: the notebook as shown in messages ("rnn.ipynb"; "" for a kernel's history)
    name: str
    source: str
    #: per line of ``source`` (index 0 is line 1): (cell label, line in the cell), or None for a separator
    lines: tuple[Optional[tuple[str, int]], ...]
    #: code cells read
    cells: int
    #: labels of code cells left out whole because they only run code at the top level
    left_out: tuple[str, ...] = ()
    #: labels of code cells of which some statements were left out
    partly: tuple[str, ...] = ()
    #: labels of cells tagged grader-skip, and of cells under a cell magic that is not Python
    skipped: tuple[str, ...] = ()
    magic_cells: tuple[str, ...] = ()
    #: lines of IPython syntax dropped
    magic_lines: int = 0
    #: modules of imports left out because nothing kept uses them
    unused_imports: tuple[str, ...] = ()
    #: kept functions that use a name only left-out code defines, and ``%run`` lines dropped
    warnings: tuple[str, ...] = field(default=())
    #: what makes loading the notebook fail, or a cell left out for its syntax error
    errors: tuple[str, ...] = field(default=())

    def where(self, line: int) -> str:
        """Line ``line`` of the module as the student sees it: "rnn.ipynb, cell 7, line 3"."""
        prefix = f"{self.name}, " if self.name else ""
        if 1 <= line <= len(self.lines) and self.lines[line - 1] is not None:
            label, number = self.lines[line - 1]  # type: ignore[misc]
            return f"{prefix}{label}, line {number}"
        after = [m for m in self.lines[max(line, 0):] if m is not None]
        before = [m for m in self.lines[: max(min(line, len(self.lines)) - 1, 0)] if m is not None]
        near = after[0] if after else before[-1] if before else None
        return f"{prefix}{near[0]}" if near else (self.name or "the notebook")

    def summary(self, module: str) -> str:
        """What was graded and what was left out, for the report's notices."""
        cells = f"{self.cells} code cell{'' if self.cells == 1 else 's'}"
        said = [f"{self.name or 'the notebook'} was graded as {module}: its {cells} in order"]
        if self.magic_lines or self.magic_cells:
            lines = f"{self.magic_lines} line{'' if self.magic_lines == 1 else 's'}"
            said.append(f"IPython syntax dropped ({lines} of %magics, !shell, ? or get_ipython()"
                        + (f"; {join_labels(self.magic_cells)} under a cell magic that is not Python" if self.magic_cells else "")
                        + ")")
        if self.left_out or self.partly:
            parts = ([f"{join_labels(self.left_out)} whole"] if self.left_out else []) + (
                [f"some statements of {join_labels(self.partly)}"] if self.partly else [])
            said.append(f"left out code that runs at the top level (training, plots, data loading): {' and '.join(parts)}; "
                        f"only definitions are loaded, as from a script whose work sits under `if __name__ == \"__main__\":` "
                        f"(tag a cell {KEEP_TAG} to keep it whole, {SKIP_TAG} to leave it out)")
        if self.skipped:
            said.append(f"{join_labels(self.skipped)} tagged {SKIP_TAG}, left out")
        if self.unused_imports:
            said.append(f"imports nothing kept uses left out: {', '.join(self.unused_imports[:5])}"
                        + (f" and {len(self.unused_imports) - 5} more" if len(self.unused_imports) > 5 else ""))
        return "; ".join(said)


def join_labels(labels: Sequence[str]) -> str:
    """``cell 3``, ``cells 3, 5 and 9``, ``In [4] and In [6]``."""
    labels = list(labels)
    if labels and all(label.startswith("cell ") for label in labels):
        numbers = [label[5:] for label in labels]
        return "cell " + numbers[0] if len(numbers) == 1 else "cells " + ", ".join(numbers[:-1]) + " and " + numbers[-1]
    return labels[0] if len(labels) == 1 else ", ".join(labels[:-1]) + " and " + labels[-1] if labels else ""


# ---------------------------------------------------------------------------------------------- reading


def module_name(notebook: str) -> str:
    """The .py name a notebook is graded under: ``rnn.ipynb`` -> ``rnn.py``, ``RNN (1).ipynb`` -> ``RNN__1_.py``."""
    stem = re.sub(r"\W", "_", notebook[: -len(".ipynb")] if notebook.endswith(".ipynb") else notebook) or "notebook"
    return ("nb_" + stem if stem[0].isdigit() else stem) + ".py"


def read_cells(raw: Union[bytes, str], name: str = "notebook.ipynb") -> tuple[int, list[Cell]]:
    """The notebook's code cells, labelled "cell N" by position among all its cells, and how many cells it has.

    :param raw: the file's bytes (or text)
    :raises NotebookError: not UTF-8, not JSON, or not a notebook nbformat can read
    """
    import nbformat  # the Jupyter project's reader; imported only when a notebook is graded

    try:
        text = raw.decode("utf-8-sig") if isinstance(raw, bytes) else raw
    except UnicodeDecodeError:
        raise NotebookError(f"{name} is not UTF-8 text; open it in Jupyter and save it again") from None
    try:
        # nbformat logs and warns about schema problems (a missing cell id); captured, and the cells checked below
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            notebook = nbformat.reads(text, as_version=4, capture_validation_error={})
        cells = list(notebook.cells)
    except Exception as exc:  # noqa: BLE001 - nbformat raises many kinds on a broken file; each is the same to a student
        why = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        raise NotebookError(f"{name} is not a notebook Jupyter can open ({why}); open it in Jupyter and save it "
                            "again, or submit .py files") from None
    code = []
    for position, cell in enumerate(cells, 1):
        if not isinstance(cell, Mapping) or cell.get("cell_type") != "code":
            continue
        source = cell.get("source", "")
        source = "".join(source) if isinstance(source, list) else source if isinstance(source, str) else ""
        metadata = cell.get("metadata")
        tags = metadata.get("tags", ()) if isinstance(metadata, Mapping) else ()
        tags = frozenset(t for t in tags if isinstance(t, str)) if isinstance(tags, (list, tuple)) else frozenset()
        code.append(Cell(f"cell {position}", source.replace("\r\n", "\n").replace("\r", "\n"), tags))
    return len(cells), code


def notebook_to_python(raw: Union[bytes, str], name: str = "notebook.ipynb") -> Converted:
    """The notebook ``raw`` (its file's bytes) as one module; see the module's docstring for the rules.

    :raises NotebookError: the file is not a readable notebook
    """
    return convert(read_cells(raw, name)[1], name)


# ---------------------------------------------------------------------------------------------- converting


@dataclass
class _Ruled:
    """A parsed cell and what the rule made of it."""

    cell: Cell
    lines: list[str]
    body: list[ast.stmt]
    keep: list[bool]
    #: statement index -> the text kept of it (the cheap part of a tuple assignment)
    rewrites: dict[int, str] = field(default_factory=dict)
    #: bare expressions inside kept blocks (``print`` in an ``if``): each becomes ``pass``
    passed: list[ast.stmt] = field(default_factory=list)


def convert(cells: Iterable[Cell], name: str = "") -> Converted:
    """Code cells, in order, as one module with its line map."""
    out: list[str] = []
    lines: list[Optional[tuple[str, int]]] = []
    left_out, partly, skipped, magic_cells = [], [], [], []
    magic_lines, count = 0, 0
    defined: set[str] = set(BUILTINS)
    imported: set[str] = set()  # names an import binds
    records: set[str] = set()  # kept classes whose constructor Python generates
    ruled_cells: list[_Ruled] = []
    dropped_bound: dict[str, tuple[str, ast.stmt]] = {}  # name -> the left-out code that binds it, and its cell
    notes: list[str] = []
    errors: list[str] = []
    for cell in cells:
        if not cell.source.strip():
            continue
        count += 1
        if SKIP_TAG in cell.tags:
            skipped.append(cell.label)
            continue
        for run in re.findall(r"(?m)^[ \t]*%run\b[^\n]*", cell.source):
            notes.append(f"{cell.label}: `{run.strip()}` is not run when grading, so what it defines is not loaded: "
                         f"copy the definitions this notebook needs into it")
        body, dropped = strip_ipython(cell.source)
        magic_lines += dropped
        if body is None:
            magic_cells.append(cell.label)
            continue
        cell_lines = body.split("\n")
        try:
            tree = ast.parse(body)
        except (SyntaxError, ValueError, RecursionError, MemoryError) as exc:
            if _DEFINITION_LINE.search(body):
                ruled_cells.append(_Ruled(cell, cell_lines, [], []))  # kept: the loader reports the error at its line
            else:  # scratch work that defines nothing: the rest of the notebook can still be graded
                line = getattr(exc, "lineno", None)
                where = f"{cell.label}, line {line}" if line else cell.label
                why = getattr(exc, "msg", None) or (str(exc).splitlines() or [""])[0]
                errors.append(f"{where}: {type(exc).__name__}: {why}; the cell was left out (it defines no function "
                              f"or class): fix it or delete it")
            continue
        ruled = _Ruled(cell, cell_lines, list(tree.body), [])
        for i, stmt in enumerate(ruled.body):  # in order: a statement may read what the one before defined
            known = Known(frozenset(imported), frozenset(records))
            imported |= {n for node in ast.walk(stmt) if isinstance(node, (ast.Import, ast.ImportFrom))
                         for n in bound_names(node)}
            passed: list[ast.stmt] = []
            if KEEP_TAG in cell.tags or defines(stmt, defined, known, passed):
                ruled.keep.append(True)
                ruled.passed += passed
            elif (split := split_assignment(stmt, defined, known, body)) is not None:
                ruled.body[i], ruled.rewrites[i], lost = split
                ruled.keep.append(True)
                for bound in lost:
                    dropped_bound.setdefault(bound, (cell.label, stmt))
            else:
                ruled.keep.append(False)
                for bound in bound_names(stmt):
                    dropped_bound.setdefault(bound, (cell.label, stmt))
                continue
            names = bound_names(ruled.body[i])
            defined |= names
            records = (records - names) | record_names(ruled.body[i])
        ruled_cells.append(ruled)
    used = set()
    for ruled in ruled_cells:
        passed_ids = {id(n) for stmt in ruled.passed for n in ast.walk(stmt)}
        used |= {n for stmt, k in zip(ruled.body, ruled.keep) if k and not isinstance(stmt, (ast.Import, ast.ImportFrom))
                 for n in loaded_names(stmt, passed_ids)}
    future_annotations = any(isinstance(stmt, ast.ImportFrom) and stmt.module == "__future__"
                             and any(a.name == "annotations" for a in stmt.names)
                             for ruled in ruled_cells for stmt in ruled.body)
    unused: list[str] = []
    for ruled in ruled_cells:
        cell, body = ruled.cell, ruled.body
        keep = list(ruled.keep)
        for i, stmt in enumerate(body):
            if keep[i] and isinstance(stmt, (ast.Import, ast.ImportFrom)) and not import_used(stmt, used):
                keep[i] = False
                unused += imported_modules(stmt)
        if not all(ruled.keep) or ruled.rewrites or ruled.passed:  # the rule left out statements that run code
            (partly if any(keep) else left_out).append(cell.label)
        if body and not any(keep):
            continue
        for stmt, k in zip(body, keep):
            if k and isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                fatal = read_when_defined(stmt, future_annotations, set(dropped_bound) - defined)
                for read in fatal[:1]:
                    errors.append(f"loading the notebook fails: {cell.label}, line {read.lineno} reads `{read.id}` when "
                                  f"`{stmt.name}` is defined (decorators, default values and annotations are evaluated "
                                  f"then), and only code left out of {dropped_bound[read.id][0]} defines it: use a "
                                  f"constant there, or read `{read.id}` inside the function")
                missing = sorted((free_names(stmt) & set(dropped_bound)) - defined - {r.id for r in fatal})
                if missing:
                    notes.append(_missing_note(stmt, cell.label, missing, dropped_bound[missing[0]]))
        out.append(f"# {cell.label}")
        lines.append(None)
        for number, text in enumerate(_edited(ruled, keep), 1):
            if text is not None:
                out.append(text)
                lines.append((cell.label, number))
    return Converted(name, "\n".join(out) + "\n", tuple(lines), count, tuple(left_out), tuple(partly),
                     tuple(skipped), tuple(magic_cells), magic_lines, tuple(dict.fromkeys(unused)), tuple(notes),
                     tuple(errors))


#: a line of an unparsable cell that starts a definition the grader may need
_DEFINITION_LINE = re.compile(r"(?m)^[ \t]*(@|def\s|async\s+def\s|class\s)")


def _missing_note(stmt: ast.stmt, label: str, missing: list[str], source: tuple[str, ast.stmt]) -> str:
    """The warning for a kept function that reads a name only left-out code defines."""
    said = f"{stmt.name} ({label}) uses {', '.join(missing[:3])}, which only code left out of {source[0]} defines, so calling it fails"
    if not any(isinstance(node, ast.Call) for node in ast.walk(source[1])):  # a pure computation (a loop)
        return f"{said}: pass it as an argument, define it with a simple value, or tag that cell {KEEP_TAG}"
    arguments = [a.arg for a in stmt.args.posonlyargs + stmt.args.args + stmt.args.kwonlyargs
                 if a.arg not in ("self", "cls")] if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef)) else []
    use = (f"use the function's arguments instead (here {', '.join(f'`{a}`' for a in arguments)})" if arguments
           else "pass it as an argument")
    return f"{said}: that code calls functions (loading data, training), which grading does not run; {use}"


def _edited(ruled: _Ruled, keep: list[bool]) -> list[Optional[str]]:
    """The cell's lines as kept (None: left out), every kept line at its number.

    A left-out statement's lines go; where it shares a line with kept code (``import torch; print(...)``),
    or sits in a kept block, its text becomes ``pass``; a split tuple assignment keeps its cheap part.
    """
    body = ruled.body
    kept_lines = {n for stmt, k in zip(body, keep) if k for n in span(stmt)}
    replaced: list[tuple[ast.stmt, str]] = [(s, "pass") for s in ruled.passed]
    omitted: set[int] = set()
    for i, (stmt, k) in enumerate(zip(body, keep)):
        if k and i in ruled.rewrites:
            replaced.append((stmt, ruled.rewrites[i]))
        elif not k and kept_lines & set(span(stmt)):
            replaced.append((stmt, "pass"))
        elif not k:
            omitted |= set(span(stmt))
    text = list(ruled.lines)
    for stmt, new in sorted(replaced, key=lambda r: (r[0].lineno, r[0].col_offset), reverse=True):
        first, last = text[stmt.lineno - 1], text[(stmt.end_lineno or stmt.lineno) - 1]
        head = first[: _column(first, stmt.col_offset)]
        tail = last[_column(last, stmt.end_col_offset or 0):]
        if stmt.end_lineno == stmt.lineno:
            text[stmt.lineno - 1] = head + new + tail
        else:
            text[stmt.lineno - 1] = head + new + ("" if tail.strip()[:1] in ("", "#") else tail)
            for n in range(stmt.lineno, stmt.end_lineno or stmt.lineno):
                text[n] = ""
    return [None if number in omitted else line for number, line in enumerate(text, 1)]


def _column(line: str, offset: int) -> int:
    """The character index of ``ast``'s column ``offset``, which counts UTF-8 bytes."""
    return len(line.encode("utf-8")[:offset].decode("utf-8", "ignore"))


def strip_ipython(source: str) -> tuple[Optional[str], int]:
    """The cell without IPython syntax (None when a cell magic makes it not Python), and the lines dropped.

    Lines that are dropped become empty, so every line keeps its number. A cell that is valid Python as it
    stands loses only its ``get_ipython()`` lines (a ``%`` in a string is not a magic).
    """
    lines = source.split("\n")
    dropped = 0
    first = next((i for i, line in enumerate(lines) if line.strip()), None)
    if first is not None and lines[first].lstrip().startswith("%%"):
        magic = lines[first].lstrip()[2:].split(None, 1)[0] if lines[first].lstrip()[2:].strip() else ""
        if magic not in PYTHON_CELL_MAGICS:
            return None, len([line for line in lines if line.strip()])
        lines[first], dropped = "", 1
    try:
        ast.parse("\n".join(lines))
        valid = True
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        valid = False
    for i, line in enumerate(lines):
        stripped = line.strip()
        if stripped.startswith("get_ipython(") or (not valid and _ipython_line(stripped)):
            indent = line[: len(line) - len(line.lstrip())]
            lines[i] = indent + "pass" if indent else ""  # inside a block, a statement keeps it valid
            dropped += 1
    return "\n".join(lines), dropped


def _ipython_line(stripped: str) -> bool:
    return bool(stripped) and (stripped.startswith(("%", "!")) or bool(_MAGIC_ASSIGNMENT.match(stripped))
                               or bool(_HELP.match(stripped)))


# ---------------------------------------------------------------------------------------------- messages


def point_at_notebooks(report: GradingReport, notebooks: Mapping[str, Converted]) -> GradingReport:
    """The report with every place it names a converted notebook's module pointing at the notebook instead.

    ``rnn.py:57``, ``rnn.py, line 57`` (and ``(line 57)`` or ``on line 57`` in a problem of that file) become
    ``rnn.ipynb, cell 7, line 3``; ``rnn.py`` alone becomes ``rnn.ipynb``. Locations for annotations point
    at the notebook's first line (a notebook's lines are not its cells'). Each notebook's summary (what was
    graded, what left out) comes first among the notices, and its warnings among the problems.

    :param notebooks: the module's file name (``rnn.py``) -> its conversion
    """
    if not notebooks:
        return report
    # a folder before the module (`/tmp/submission-x1/rnn.py:114` in a warning's output) goes with it
    patterns = {module: re.compile(rf"(?<![\w./-])(?:[\w.~-]*/)*{re.escape(module)}(?::(\d+)|, line (\d+))?(?![\w])")
                for module in notebooks}

    def text(value: str, own: Optional[str] = None) -> str:
        for module, pattern in patterns.items():
            converted = notebooks[module]
            shown = converted.name or module

            def located(match: "re.Match[str]") -> str:
                number = match.group(1) or match.group(2)
                return converted.where(int(number)) if number else shown
            value = pattern.sub(located, value)
        if own is not None:  # a problem of the module itself: its bare line numbers are the module's too
            converted = notebooks[own]
            value = re.sub(r"\(line (\d+)\)", lambda m: f"({converted.where(int(m.group(1)))})", value)
            value = re.sub(r"\bon line (\d+)\b", lambda m: f"in {converted.where(int(m.group(1)))}", value)
        return value

    def check(result):  # noqa: ANN001 - a CheckResult
        return replace(result, message=text(result.message), details=text(result.details), output=text(result.output))

    exercises = tuple(replace(ex, checks=tuple(check(c) for c in ex.checks)) for ex in report.exercises)
    def problem(p: FileProblem) -> FileProblem:
        converted = notebooks.get(p.path)
        if converted is None:
            return p
        message = text(p.message, p.path)
        where = converted.where(p.line).removeprefix(f"{converted.name}, ") if p.line > 0 else ""
        if where and where not in message:  # the line it is about, as a cell's
            message = f"{where}: {message}"
        return FileProblem(converted.name or p.path, message, p.severity)  # a notebook has no lines of its own

    problems = tuple(problem(p) for p in report.problems)
    implemented = {hook: notebooks[f].name or f if f in notebooks else f for hook, f in report.implemented.items()}
    locations = {hook: ((notebooks[f].name or f, 1) if f in notebooks else (f, line))
                 for hook, (f, line) in report.locations.items()}
    problems += tuple(FileProblem(c.name or m, e, "error") for m, c in notebooks.items() for e in c.errors)
    problems += tuple(FileProblem(c.name or m, w, "warning") for m, c in notebooks.items() for w in c.warnings)
    notices = tuple(c.summary(m) for m, c in notebooks.items()) + tuple(text(n) for n in report.notices)
    return replace(report, exercises=exercises, problems=problems, implemented=implemented, locations=locations,
                   notices=notices,
                   skipped_here=tuple(check(c) for c in report.skipped_here))
