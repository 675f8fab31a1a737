"""Notebooks graded like .py files: the converter's rules, `grade my.ipynb`, a folder, a batch archive, and
`check("rnn")` in a (faked) Jupyter kernel."""

from __future__ import annotations

import csv
import importlib.util
import json
import math
import re
import zipfile
from dataclasses import replace
from pathlib import Path

import nbformat
import pytest

from conftest import REFERENCE, checks_of, lost
from grader.notebooks import KEEP_TAG, SKIP_TAG, Cell, NotebookError, convert, notebook_to_python, point_at_notebooks

HAS_D2L = importlib.util.find_spec("d2l") is not None


def reference_body(name: str) -> str:
    """A reference file without its docstring and its sibling import (a notebook holds every function)."""
    text = (REFERENCE / name).read_text().split('"""', 2)[2].lstrip("\n")
    return re.sub(r"if __package__:.*?from grad_clipping import grad_clipping\n", "", text, flags=re.S)


def book_notebook(rnn_cell: str = "", d2l: bool = HAS_D2L) -> nbformat.NotebookNode:
    """A notebook in the book's style holding a full solution: markdown, magics, shell lines, a %%time
    cell, a training cell at the top level and a plot with matplotlib."""
    md, code = nbformat.v4.new_markdown_cell, nbformat.v4.new_code_cell
    imports = ("%matplotlib inline\n!pip install d2l==0.17.6\nimport math\nimport torch\nfrom torch import nn\n"
               "from torch.nn import functional as F\n" + ("from d2l import torch as d2l\n" if d2l else "")
               + "from grader import hookimpl")
    cells = [
        md("# Recurrent neural networks from scratch"),                            # 1
        code(imports),                                                               # 2
        md("## The model"),                                                          # 3
        code(rnn_cell or reference_body("rnn_scratch.py")),                          # 4
        code("X = torch.arange(10).reshape((2, 5))\nF.one_hot(X.T, 28).shape"),      # 5
        code(reference_body("grad_clipping.py")),                                    # 6
        code(reference_body("predict.py")),                                          # 7
        code(book_train_epoch() if d2l else reference_body("train_epoch.py")),       # 8
        code(reference_body("rnn_concise.py")),                                      # 9
        code(reference_body("sine_wave.py")),                                        # 10
        code(reference_body("gradient_flow.py")),                                    # 11
        code("%%time\nnum_epochs, lr, num_hiddens = 500, 1, 512\n"                    # 12
             "params = get_params(28, num_hiddens, torch.device('cpu'))\n"
             "state = init_rnn_state(2, num_hiddens, torch.device('cpu'))\n"
             "for epoch in range(num_epochs):\n    Y, state = rnn(F.one_hot(X.T, 28).float(), state, params)\n"
             + ("d2l.plot(list(range(10)), [list(range(10))])\n" if d2l else "")),
        code("import matplotlib.pyplot as plt\nplt.plot([1, 2, 3])\nplt.show()"),   # 13
    ]
    notebook = nbformat.v4.new_notebook()
    notebook.cells = cells
    return notebook


def book_train_epoch() -> str:
    """train_epoch as the book writes it, with d2l's Timer and Accumulator (so the notebook's d2l import is used)."""
    body = reference_body("train_epoch.py")
    body = body.replace("state, start = None, time.perf_counter()\n    total_loss, total_tokens = 0.0, 0",
                        "state, timer = None, d2l.Timer()\n    metric = d2l.Accumulator(2)")
    body = body.replace("total_loss += l.item() * y.numel()\n        total_tokens += y.numel()",
                        "metric.add(l.item() * y.numel(), y.numel())")
    head, _, _ = body.rpartition("    elapsed = ")
    assert "d2l.Timer()" in head and "metric.add(" in head, "the reference's train_epoch changed; update this test"
    return head + "    return math.exp(metric[0] / metric[1]), metric[1] / max(timer.stop(), 1e-9)\n"


def write_notebook(path: Path, notebook: nbformat.NotebookNode) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(notebook, str(path))
    return path


#: the scratch RNN with the state's product written the wrong way round: it raises on a batch that is not square
SWAPPED = reference_body("rnn_scratch.py").replace("torch.mm(H, W_hh)", "torch.mm(W_hh, H)")


# ---------------------------------------------------------------------------------------------- grading


def test_a_book_style_notebook_scores_full_marks_with_grade_my_ipynb(tmp_path, capsys):
    from grader.cli import main

    notebook = write_notebook(tmp_path / "work" / "rnn.ipynb", book_notebook())
    (tmp_path / "work" / "scratch.py").write_text("raise SystemExit('not graded: only the notebook is')\n")
    assert main([str(notebook), "--no-config"]) == 0
    out = capsys.readouterr().out
    assert "Score: 100/100" in out, out
    assert "rnn.ipynb was graded as rnn.py" in out
    assert "cells 5 and 13 whole" in out and "some statements of cell 12" in out  # the work, left out


def test_the_same_notebook_in_a_folder_scores_full_marks(tmp_path, grading):
    write_notebook(tmp_path / "hw" / "My Homework.ipynb", book_notebook())
    report = grading(tmp_path / "hw")
    assert report.points == report.max_points == 100, [(c.check_id, c.message) for c in report.all_checks()
                                                       if c.status != "passed"]
    assert not report.problems, report.problems
    assert set(report.implemented.values()) == {"My Homework.ipynb"}
    assert all(file == "My Homework.ipynb" and line == 1 for file, line in report.locations.values())


def test_a_mistake_costs_its_exercise_only_and_names_the_cell_and_line(tmp_path, grading):
    write_notebook(tmp_path / "hw" / "rnn.ipynb", book_notebook(rnn_cell=SWAPPED))
    report = grading(tmp_path / "hw")
    assert set(lost(report)) == {"rnn_scratch"}, lost(report)
    line = SWAPPED.splitlines().index(next(x for x in SWAPPED.splitlines() if "torch.mm(W_hh, H)" in x)) + 1
    raised = [c for c in checks_of(report, "rnn_scratch").values() if c.status == "error" and not c.same_cause_as]
    assert raised, [(c.check_id, c.status, c.message) for c in report.all_checks()]
    said = raised[0].message + "\n" + raised[0].details  # a recognised mistake keeps the error's own text as details
    assert f"rnn.ipynb, cell 4, line {line}" in said, said
    assert "rnn.py" not in said


def test_file_problems_in_a_notebook_name_the_cell_and_line(tmp_path, grading):
    unmarked = reference_body("rnn_scratch.py").replace("@hookimpl\ndef rnn(", "def rnn(")
    line = unmarked.split("def rnn(")[0].count("\n") + 1
    write_notebook(tmp_path / "hw" / "rnn.ipynb", book_notebook(rnn_cell=unmarked))
    report = grading(tmp_path / "hw")
    assert [(p.where, p.message.split(":")[0]) for p in report.problems] == [("rnn.ipynb", f"cell 4, line {line}")]
    # a syntax error: the notebook's module cannot be imported, so its checks are errors that say where
    broken = reference_body("rnn_scratch.py").replace("def rnn(inputs, state, params):", "def rnn(inputs, state, params)")
    line = broken.split("def rnn(inputs")[0].count("\n") + 1
    write_notebook(tmp_path / "hw" / "rnn.ipynb", book_notebook(rnn_cell=broken))
    report = grading(tmp_path / "hw")
    message = checks_of(report, "rnn_scratch")["rnn_scratch.rnn.shapes"].message
    assert report.all_checks() and {c.status for c in report.all_checks()} == {"error"}, message
    assert f"which could not be imported: SyntaxError: expected ':' at rnn.ipynb, cell 4, line {line}" in message


def test_a_notebook_exported_as_a_script_loses_only_its_get_ipython_lines(tmp_path, grading):
    # what `jupyter nbconvert --to script` writes: magics as get_ipython() calls, cells as "# In[n]:"
    source = (REFERENCE / "grad_clipping.py").read_text()
    exported = ("#!/usr/bin/env python\n# coding: utf-8\n\n# In[1]:\n\n\nget_ipython().run_line_magic('matplotlib', 'inline')\n"
                "get_ipython().system('pip install d2l==0.17.6')\n\n\n# In[2]:\n\n\n" + source)
    folder = tmp_path / "hw"
    folder.mkdir()
    (folder / "grad_clipping.py").write_text(exported)
    report = grading(folder)
    assert not lost(report).get("grad_clipping"), [c.message for c in checks_of(report, "grad_clipping").values()]
    assert [(p.path, p.severity) for p in report.problems] == [("grad_clipping.py", "warning")]
    assert report.problems[0].message.startswith("2 lines calling get_ipython()")


def test_a_real_py_file_wins_over_a_notebook_of_the_same_name(tmp_path, grading):
    folder = tmp_path / "hw"
    write_notebook(folder / "rnn_scratch.ipynb", book_notebook(rnn_cell=SWAPPED))
    for path in REFERENCE.glob("*.py"):
        if path.name != "__init__.py":
            (folder / path.name).write_text(path.read_text())
    write_notebook(folder / "explore.ipynb", book_notebook(rnn_cell=SWAPPED))  # a scratchpad beside the exercises
    report = grading(folder)
    assert report.points == report.max_points
    assert any(p.path == "rnn_scratch.ipynb" and "rnn_scratch.py beside it" in p.message and p.severity == "warning"
               for p in report.problems), report.problems
    assert any(p.path == "explore.ipynb" and "`grade explore.ipynb`" in p.message and p.severity == "warning"
               for p in report.problems), report.problems


def test_staging_prefers_a_folder_of_py_files_to_a_notebook_above_it(tmp_path):
    from grader.judge.intake import discover
    from grader.judge.staging import stage

    root = tmp_path / "subs"
    write_notebook(root / "alice" / "notes.ipynb", book_notebook())
    (root / "alice" / "exercises").mkdir()
    (root / "alice" / "exercises" / "rnn_scratch.py").write_text("A = 1\n")
    write_notebook(root / "bob" / "work" / "hw.ipynb", book_notebook())
    staged = {entry.student: stage(entry, tmp_path / "staged" / entry.student) for entry in discover(root).entries}
    assert sorted(p.name for p in staged["alice"].folder.iterdir()) == ["rnn_scratch.py"]
    assert sorted(p.name for p in staged["bob"].folder.iterdir()) == ["hw.ipynb"]


@pytest.mark.skipif(not HAS_D2L, reason="d2l is not installed here")
def test_a_book_style_notebook_using_d2l_scores_full_marks(tmp_path, grading):
    write_notebook(tmp_path / "hw" / "rnn.ipynb", book_notebook(d2l=True))
    report = grading(tmp_path / "hw")
    assert report.points == report.max_points == 100


def test_a_notebook_in_a_batch_archive_or_alone_is_graded(tmp_path):
    from grader.cli import main

    notebook = write_notebook(tmp_path / "made" / "homework.ipynb", book_notebook(rnn_cell=SWAPPED))
    submissions = tmp_path / "submissions"
    submissions.mkdir()
    with zipfile.ZipFile(submissions / "alice.zip", "w") as archive:
        archive.write(notebook, "alice-rnn/homework.ipynb")
    write_notebook(submissions / "bob.ipynb", book_notebook())  # one notebook per student, as uploaded
    out = tmp_path / "results"
    assert main(["--batch", str(submissions), "--out", str(out), "--jobs", "1", "--no-config"]) == 0
    with open(out / "gradebook.csv", newline="", encoding="utf-8") as f:
        rows = {r["student"]: r for r in csv.DictReader(f)}
    row = rows["alice"]
    assert row["status"] == "graded" and float(row["rnn_scratch"]) < 30 and float(row["score"]) >= 70, row
    assert rows["bob"]["status"] == "graded" and float(rows["bob"]["score"]) == 100, rows["bob"]
    record = json.loads((out / "alice" / "results.json").read_text())
    assert "homework.ipynb, cell 4, line" in json.dumps(record)


# ---------------------------------------------------------------------------------------------- the converter


def test_ipython_syntax_is_dropped_and_counted():
    converted = convert([
        Cell("cell 1", "%matplotlib inline\n!pip install d2l\nfiles = !ls\nlen?\nimport torch"),
        Cell("cell 2", "%%bash\nls -la"),
        Cell("cell 3", "%%time\nget_ipython().run_line_magic('who', '')\nif True:\n    %time x = 1\nW = torch.zeros(3)"),
        Cell("cell 4", "text = '%d items'  # a % in a string is not a magic\nprint(text)"),
    ], "hw.ipynb")
    compile(converted.source, "hw.py", "exec")
    assert "pip" not in converted.source and "ls -la" not in converted.source and "get_ipython" not in converted.source
    assert "W = torch.zeros(3)" in converted.source and "text = '%d items'" in converted.source
    assert converted.magic_lines == 9 and converted.magic_cells == ("cell 2",)
    summary = converted.summary("hw.py")
    assert "hw.ipynb was graded as hw.py" in summary and "9 lines" in summary and "cell 2 under a cell magic" in summary


def test_definitions_are_kept_and_top_level_work_is_left_out():
    converted = convert([
        Cell("cell 1", "import torch\nfrom torch import nn\nimport matplotlib.pyplot as plt\n"
                       "train_iter, vocab = load_data_time_machine(32, 35)\nbatch_size, num_steps = 32, 35"),
        Cell("cell 2", "def uses_vocab():\n    return len(vocab)\n\nclass Model(nn.Module):\n    pass"),
        Cell("cell 3", "device = torch.device('cpu')\nlayer = nn.RNN(28, num_steps)\nvocab_size = len(vocab)\n"
                       "net = Model()\ntrain_ch8(net, train_iter, vocab, 1, 500, device)"),
        Cell("cell 4", "plt.plot([1, 2])\nplt.show()"),
        Cell("cell 5", "if __name__ == '__main__':\n    train_ch8(net)\ntorch.manual_seed(0)"),
    ], "hw.ipynb")
    source = converted.source
    compile(source, "hw.py", "exec")
    for kept in ("import torch", "batch_size, num_steps = 32, 35", "def uses_vocab", "class Model",
                 "device = torch.device('cpu')", "layer = nn.RNN(28, num_steps)", "if __name__ == '__main__':",
                 "torch.manual_seed(0)"):
        assert kept in source, kept
    # work, a value computed by a call, a name only work defines, and an import only work uses: left out
    for dropped in ("load_data_time_machine", "vocab_size =", "net = Model()", "train_ch8(net, train_iter",
                    "plt.plot", "matplotlib"):
        assert dropped not in source, dropped
    assert converted.left_out == ("cell 4",) and converted.partly == ("cell 1", "cell 3")
    assert converted.unused_imports == ("matplotlib.pyplot",)
    assert len(converted.warnings) == 1 and "uses_vocab (cell 2) uses vocab" in converted.warnings[0]
    # vocab comes from loading data, which grading does not run: keeping that cell would not help
    assert "cell 1" in converted.warnings[0] and "pass it as an argument" in converted.warnings[0]
    assert KEEP_TAG not in converted.warnings[0]


def run_module(source: str) -> dict:
    """The converted module's names after running it (the tests' own code, as a loader would)."""
    import sys
    import types

    module = types.ModuleType("converted_notebook")
    sys.modules[module.__name__] = module  # dataclasses look their module up
    try:
        exec(compile(source, "converted.py", "exec"), module.__dict__)  # noqa: S102 - code written by these tests
    finally:
        del sys.modules[module.__name__]
    return module.__dict__


def test_a_cell_that_does_not_parse_and_defines_nothing_is_left_out_with_an_error():
    converted = convert([
        Cell("cell 1", "import torch\ndef f(x):\n    return x"),
        Cell("cell 21", "# trying a GRU\ngru_layer = torch.nn.GRU(28, 256"),
    ], "hw.ipynb")
    assert "def f(x):" in converted.source and "GRU" not in converted.source
    run_module(converted.source)
    assert converted.errors == ("cell 21, line 2: SyntaxError: '(' was never closed; the cell was left out (it "
                                "defines no function or class): fix it or delete it",)
    # a broken cell holding a definition is kept, so the loader reports its error rather than losing the function
    kept = convert([Cell("cell 4", "def rnn(x)\n    return x")], "hw.ipynb")
    assert "def rnn(x)" in kept.source and not kept.errors


def test_assignments_configuring_an_imported_library_are_left_out_with_its_import():
    converted = convert([Cell("cell 1", "import matplotlib.pyplot as plt\nimport pandas as pd\nimport torch\n"
                                        "plt.rcParams['figure.figsize'] = (10, 4)\npd.options.display.width = 120\n"
                                        "torch.backends.cudnn.benchmark = True\nsettings = {}\nsettings['lr'] = 1\n"
                                        "W = torch.zeros(2)")], "hw.ipynb")
    source = converted.source
    assert "rcParams" not in source and "pd.options" not in source and "cudnn" not in source
    assert "matplotlib" not in source and "pandas" not in source  # nothing kept uses them now
    assert "settings['lr'] = 1" in source and "W = torch.zeros(2)" in source  # the notebook's own dict: kept
    assert run_module(source)["settings"] == {"lr": 1}


def test_lookup_tables_built_by_comprehensions_are_kept():
    converted = convert([
        Cell("cell 1", "import torch\nfrom torch import nn"),
        Cell("cell 6", 'ACTIVATIONS = {n: getattr(torch, n) for n in ("tanh", "relu")}\nACT = ACTIVATIONS["tanh"]\n'
                       "SQUARES = [i * i for i in range(4) if i % 2]\nPAIRS = {(a, b) for a in range(2) for b in range(a)}\n"
                       "vocab = load_vocab()\nIDS = {t: i for i, t in enumerate(vocab)}\n"
                       "LAYERS = [make_layer(i) for i in range(3)]"),
    ], "hw.ipynb")
    namespace = run_module(converted.source)
    import torch
    assert namespace["ACT"] is torch.tanh and namespace["SQUARES"] == [1, 9] and namespace["PAIRS"] == {(1, 0)}
    # a comprehension over a left-out name, or calling a function, is work: left out
    assert "IDS" not in namespace and "make_layer" not in converted.source


def test_a_left_out_name_read_when_a_function_is_defined_is_an_error_saying_loading_fails():
    converted = convert([
        Cell("cell 4", "import torch\nfrom grader import hookimpl\ncfg = load_config('lab.yaml')"),
        Cell("cell 6", "@hookimpl\ndef grad_clipping(net,\n                  theta=cfg.theta):\n    return theta"),
        Cell("cell 7", "def uses_cfg_inside(net):\n    return cfg.theta"),
    ], "hw.ipynb")
    assert converted.errors == (
        "loading the notebook fails: cell 6, line 3 reads `cfg` when `grad_clipping` is defined (decorators, "
        "default values and annotations are evaluated then), and only code left out of cell 4 defines it: use a "
        "constant there, or read `cfg` inside the function",)
    assert [w.split(" uses ")[0] for w in converted.warnings] == ["uses_cfg_inside (cell 7)"]
    assert "use the function's arguments instead (here `net`)" in converted.warnings[0]
    # postponed annotations are not read at definition time
    later = convert([Cell("cell 1", "from __future__ import annotations\nT = load()\ndef f(x: T) -> T:\n    return x")])
    assert not later.errors


def test_common_definition_values_are_kept():
    converted = convert([
        Cell("cell 1", "import collections, logging, math, types\nfrom dataclasses import dataclass, field\n"
                       "from typing import NamedTuple\nimport numpy as np\nimport torch"),
        Cell("cell 2", "@dataclass(frozen=True)\nclass Config:\n    theta: float = 1.0\n\ncfg = Config(theta=0.5)\n"
                       "class HP(NamedTuple):\n    lr: float\n    epochs: int\nhp = HP(1.0, 1)\n"
                       "Pair = collections.namedtuple('Pair', 'a b')\npair = Pair(1, 2)\n"
                       "ns = types.SimpleNamespace(lr=0.1)\nlog = logging.getLogger('lab')\n"
                       "LOG2, EPS = math.log(2), np.finfo(np.float32).eps\ngen = torch.Generator().manual_seed(0)"),
        Cell("cell 3", "if torch.cuda.is_available():\n    device = torch.device('cuda')\n    print('GPU:', "
                       "torch.cuda.get_device_name(0))\nelse:\n    device = torch.device('cpu'); print('CPU')\n"
                       "try:\n    SEED = int('7')\nexcept ValueError:\n    print('no seed')\n    SEED = 0"),
        Cell("cell 4", "vocab_size, num_hiddens, device2 = len(vocab), 256, torch.device('cpu')"),
    ], "hw.ipynb")
    namespace = run_module(converted.source)
    assert namespace["cfg"].theta == 0.5 and namespace["hp"].lr == 1.0 and namespace["pair"].b == 2
    assert namespace["ns"].lr == 0.1 and namespace["log"].name == "lab" and namespace["LOG2"] == math.log(2)
    assert namespace["gen"].initial_seed() == 0 and namespace["SEED"] == 7
    assert str(namespace["device"]) in ("cpu", "cuda") and "print" not in converted.source
    # the cheap parts of a tuple assignment are kept, on the statement's own line
    assert namespace["num_hiddens"] == 256 and "vocab_size" not in namespace
    assert converted.where(converted.source.splitlines().index("num_hiddens, device2 = 256, torch.device('cpu')") + 1) \
        == "hw.ipynb, cell 4, line 1"


def test_calling_a_notebook_class_is_kept_only_when_python_writes_its_constructor():
    converted = convert([
        Cell("cell 1", "from dataclasses import dataclass, field"),
        Cell("cell 2", "@dataclass\nclass Loads:\n    n: int = 1\n    def __post_init__(self):\n        train()\n"
                       "a = Loads()\n@dataclass\nclass Factory:\n    data: list = field(default_factory=download)\n"
                       "b = Factory()\nclass Plain:\n    def __init__(self):\n        train()\nc = Plain()\n"
                       "@dataclass\nclass Child(Plain):\n    n: int = 1\nd = Child()\n"
                       "@dataclass\nclass Guarded:\n    n: int = 1\n    def __setattr__(self, k, v):\n        train()\n"
                       "e = Guarded()\n@dataclass\nclass Setter:\n    n: int = 1\n    @property\n    def n(self):\n"
                       "        return 1\n    @n.setter\n    def n(self, v):\n        train()\nf = Setter()"),
    ], "hw.ipynb")
    for call in ("a = Loads()", "b = Factory()", "c = Plain()", "d = Child()", "e = Guarded()", "f = Setter()"):
        assert call not in converted.source, call


def test_statements_sharing_a_line_keep_what_the_rule_keeps():
    converted = convert([Cell("cell 1", "import torch; print(torch.__version__)\nx = load(); y = 2; show(y)\n"
                                        "W = torch.zeros(2)")], "hw.ipynb")
    lines = converted.source.splitlines()
    assert "import torch; pass" in lines and "pass; y = 2; pass" in lines
    assert converted.where(lines.index("pass; y = 2; pass") + 1) == "hw.ipynb, cell 1, line 2"
    assert run_module(converted.source)["y"] == 2 and converted.partly == ("cell 1",)


def test_smaller_notes_name_the_import_and_the_run_line():
    converted = convert([Cell("cell 1", "import torch\nfrom torch import nn\nW = torch.zeros(2)"),
                         Cell("cell 3", "%run ./helpers.ipynb\nx = 1")], "hw.ipynb")
    assert converted.unused_imports == ("torch.nn",)
    assert converted.warnings == ("cell 3: `%run ./helpers.ipynb` is not run when grading, so what it defines is "
                                  "not loaded: copy the definitions this notebook needs into it",)


def test_tags_keep_or_skip_a_cell_whole():
    converted = convert([
        Cell("cell 1", "import torch"),
        Cell("cell 2", "vocab = sorted(set('abc'))\nfor c in vocab:\n    pass", frozenset({KEEP_TAG})),
        Cell("cell 3", "def helper():\n    return vocab", frozenset({SKIP_TAG})),
    ], "hw.ipynb")
    assert "vocab = sorted(set('abc'))" in converted.source and "for c in vocab:" in converted.source
    assert "def helper" not in converted.source and converted.skipped == ("cell 3",)
    assert "cell 3 tagged grader-skip" in converted.summary("hw.py")


def test_the_line_map_counts_every_cell_as_jupyter_shows_them(tmp_path):
    notebook = nbformat.v4.new_notebook()
    notebook.cells = [nbformat.v4.new_markdown_cell("# Title"),
                      nbformat.v4.new_code_cell("import torch\n\n\ndef f(x):\n    return x"),
                      nbformat.v4.new_raw_cell("raw"),
                      nbformat.v4.new_code_cell("%matplotlib inline\ndef g(y):\n    return y + 1")]
    notebook.cells[1].metadata["tags"] = []
    converted = notebook_to_python(nbformat.writes(notebook).encode(), "hw.ipynb")
    lines = converted.source.splitlines()
    assert converted.where(lines.index("def f(x):") + 1) == "hw.ipynb, cell 2, line 4"
    assert converted.where(lines.index("    return y + 1") + 1) == "hw.ipynb, cell 4, line 3"
    assert converted.where(10_000) == "hw.ipynb, cell 4"


def test_messages_naming_the_module_are_rewritten_to_the_notebook():
    from grader.results import CheckResult, ExerciseResult, FileProblem, GradingReport

    converted = convert([Cell("cell 3", "import torch\ndef rnn(x):\n    return x @ x")], "hw.ipynb")
    line = converted.source.splitlines().index("    return x @ x") + 1
    check = CheckResult("rnn_scratch.shapes", "rnn_scratch", "shapes", ("rnn",), 1.0, 0.0, "error",
                        f"RuntimeError: mat1 and mat2 shapes cannot be multiplied at hw.py:{line} in rnn: return x @ x",
                        details=f"at hw.py, line {line}, in rnn")
    report = GradingReport("x", 0, 1, (ExerciseResult("rnn_scratch", "RNN", 0, 1, (check,)),),
                           problems=(FileProblem("hw.py", f"could not be imported: SyntaxError: bad (line {line})"),
                                     FileProblem("other.py", "(line 2) stays")),
                           implemented={"rnn": "hw.py"}, locations={"rnn": ("hw.py", line)},
                           notices=("integrity: rnn_scratch scored 0 because hw.py changed torch.mm",))
    check = replace(check, output=f"/tmp/submission-ab12/hw.py:{line}: UserWarning: slow\n")
    report = replace(report, exercises=(replace(report.exercises[0], checks=(check,)),))
    fixed = point_at_notebooks(report, {"hw.py": converted})
    assert fixed.all_checks()[0].output == "hw.ipynb, cell 3, line 3: UserWarning: slow\n"
    shown = fixed.all_checks()[0]
    assert "at hw.ipynb, cell 3, line 3 in rnn" in shown.message and shown.details == "at hw.ipynb, cell 3, line 3, in rnn"
    assert fixed.problems[0] == FileProblem("hw.ipynb", "could not be imported: SyntaxError: bad (hw.ipynb, cell 3, line 3)")
    assert fixed.problems[1].message == "(line 2) stays"
    assert fixed.implemented == {"rnn": "hw.ipynb"} and fixed.locations == {"rnn": ("hw.ipynb", 1)}
    assert fixed.notices[0].startswith("hw.ipynb was graded as hw.py")
    assert fixed.notices[1] == "integrity: rnn_scratch scored 0 because hw.ipynb changed torch.mm"


def test_an_old_notebook_is_upgraded_and_a_broken_one_says_what_to_do():
    old = {"nbformat": 3, "nbformat_minor": 0, "metadata": {}, "worksheets": [{"cells": [
        {"cell_type": "markdown", "metadata": {}, "source": "# Old"},
        {"cell_type": "code", "metadata": {}, "input": ["x = 1\n", "y = x + 1"], "outputs": [], "language": "python"},
    ]}]}
    converted = notebook_to_python(json.dumps(old).encode(), "old.ipynb")
    assert "x = 1\ny = x + 1" in converted.source
    assert converted.where(converted.source.splitlines().index("y = x + 1") + 1) == "old.ipynb, cell 2, line 2"
    for broken in (b"{not json", b'{"cells": 3}', "caf\xe9".encode("latin-1")):
        with pytest.raises(NotebookError, match=r"^bad\.ipynb is not .*(open it in Jupyter and save it again)"):
            notebook_to_python(broken, "bad.ipynb")


def test_a_folder_of_notebooks_is_not_told_it_has_no_py_files(tmp_path, capsys):
    from grader.cli import main

    (tmp_path / "hw").mkdir()
    (tmp_path / "hw" / "rnn.ipynb").write_text("{broken")
    main([str(tmp_path / "hw"), "--no-config"])
    captured = capsys.readouterr()
    assert "has no .py files" not in captured.err + captured.out
    assert "rnn.ipynb" in captured.out and "not a notebook Jupyter can open" in captured.out


# ---------------------------------------------------------------------------------------------- check() in a notebook


class FakeShell:
    """What ``check`` reads of IPython's shell: the raw input history, In [0] being empty."""

    def __init__(self, cells: list[str]) -> None:
        self.history_manager = type("History", (), {"input_hist_raw": [""] + cells})()
        self.user_ns = {"In": [""] + cells}


def test_check_grades_the_kernels_cells_for_one_exercise(monkeypatch):
    import torch

    import grader
    from grader import jupyter

    history = [
        "%matplotlib inline\nimport torch\nfrom grader import hookimpl",   # In [1]
        reference_body("rnn_scratch.py"),                                   # In [2]
        "X = torch.arange(10).reshape((2, 5))",                             # In [3]
        SWAPPED,                                                            # In [4]: the kernel's latest rnn
        "from grader import check\ncheck('rnn')",                           # In [5]
    ]
    monkeypatch.setattr(jupyter, "get_ipython", lambda: FakeShell(history))
    torch.set_num_threads(2)
    torch.manual_seed(7)
    expected_random = torch.rand(1)
    torch.manual_seed(7)
    result = grader.check("rnn")
    assert torch.get_num_threads() == 2 and torch.equal(torch.rand(1), expected_random)  # the kernel's torch untouched
    report = result.report
    assert report is not None, result.error
    assert [ex.name for ex in report.exercises] == ["rnn_scratch"] and report.max_points == 30
    assert 0 < report.points < 30
    line = SWAPPED.splitlines().index(next(x for x in SWAPPED.splitlines() if "torch.mm(W_hh, H)" in x)) + 1
    messages = " ".join(c.message for c in report.all_checks())
    messages = " ".join(c.message + " " + c.details for c in report.all_checks())
    assert f"this notebook, In [4], line {line}" in messages, messages
    assert "Score: " in str(result) and "rnn_scratch" in repr(result)
    page = result._repr_html_()
    assert page.startswith("<iframe srcdoc=\"") and "<script" not in page.split('"', 2)[1]


def test_check_says_what_it_needs(monkeypatch):
    from grader import check, jupyter

    assert "did you mean 'rnn'" in str(check("rnnn"))
    assert "did you mean 'rnn_scratch'" in check("rnn_scrach").error
    monkeypatch.setattr(jupyter, "get_ipython", lambda: None)
    outside = check("rnn")
    assert outside.report is None and "call it in a Jupyter cell" in outside.error and "path=" in outside.error
    assert outside._repr_html_().startswith("<pre>check: ")


def test_importing_grader_imports_no_notebook_machinery():
    import subprocess
    import sys

    code = "import grader, sys; print(sorted(m for m in sys.modules if m.startswith(('grader.', 'nbformat', 'IPython', 'torch'))))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "[]", done.stdout + done.stderr
