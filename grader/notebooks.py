"""A Jupyter notebook read as a Python module: its code cells in order, without IPython's own syntax.

Students sometimes submit the notebook they worked in. The grader loads ``.py`` files, so a notebook
becomes one: every code cell in order, each line of IPython syntax (``%magic``, ``!shell``,
``get_ipython()``) replaced by ``pass`` at its indentation (so a block stays valid), and a cell
under a cell magic that is not Python (``%%bash``, ``%%writefile``) left out. Nothing else is
changed: code outside functions still runs when the module is loaded.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

#: lines starting with these (after their indentation) are IPython's, not Python's
IPYTHON_PREFIXES = ("%", "!", "get_ipython(")
#: cell magics whose body is plain Python: the magic line goes, the body stays
PYTHON_CELL_MAGICS = ("%%time", "%%timeit", "%%capture")


class NotebookError(ValueError):
    """The file is not a notebook that can be read; the message says why."""


@dataclass(frozen=True)
class Converted:
    """A notebook as Python source."""

    source: str
    #: code cells used
    cells: int
    #: lines of IPython syntax replaced, and lines of cells left out
    removed_lines: int


def notebook_to_python(raw: bytes, name: str = "notebook.ipynb") -> Converted:
    """The code cells of the notebook ``raw`` (its file's bytes) as one Python module.

    :param name: the notebook's file name, for the header comment and messages
    :raises NotebookError: not UTF-8 JSON, or not shaped like a notebook
    """
    try:
        data = json.loads(raw.decode("utf-8-sig"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise NotebookError(f"{name} is not a readable notebook ({type(exc).__name__}: {exc}); "
                            "save it again from Jupyter, or submit .py files") from None
    cells = _cells(data)
    if cells is None:
        raise NotebookError(f"{name} is JSON but not a Jupyter notebook (it has no cells); submit .py files")
    parts = [f"# {name} as Python: its code cells in order, IPython lines (%, !) replaced by pass\n"]
    used = removed = 0
    for number, cell in enumerate(cells, 1):
        if not isinstance(cell, dict) or cell.get("cell_type") != "code":
            continue
        lines = _text(cell.get("source", cell.get("input", ""))).splitlines()
        if lines and lines[0].lstrip().startswith("%%"):
            if not lines[0].lstrip().startswith(PYTHON_CELL_MAGICS):
                removed += len(lines)  # %%bash, %%writefile...: not Python
                continue
            lines, removed = lines[1:], removed + 1
        code = []
        for line in lines:
            stripped = line.lstrip()
            if stripped.startswith(IPYTHON_PREFIXES):
                code.append(line[: len(line) - len(stripped)] + "pass  # IPython line removed")
                removed += 1
            else:
                code.append(line)
        used += 1
        parts.append(f"\n# cell {number}\n" + "\n".join(code) + "\n")
    return Converted("".join(parts), used, removed)


def _cells(data: object) -> "list | None":
    """The cells of notebook format 4, or of format 3's first worksheet."""
    if not isinstance(data, dict):
        return None
    if isinstance(data.get("cells"), list):
        return data["cells"]
    sheets = data.get("worksheets")
    if isinstance(sheets, list) and sheets and isinstance(sheets[0], dict) and isinstance(sheets[0].get("cells"), list):
        return sheets[0]["cells"]
    return None


def _text(source: object) -> str:
    """A cell's source, stored as one string or as a list of lines."""
    if isinstance(source, list):
        return "".join(item for item in source if isinstance(item, str))
    return source if isinstance(source, str) else ""
