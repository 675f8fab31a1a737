"""rnn-grader: grades Dive into Deep Learning's recurrent-network exercises.

Submissions mark their functions with :data:`hookimpl`::

    from grader import hookimpl

    @hookimpl
    def rnn(inputs, state, params):
        ...
"""

import pluggy

__version__ = "0.1.0"

PROJECT = "grader"

#: Marks a function as the implementation of an exercise or harness hook.
hookimpl = pluggy.HookimplMarker(PROJECT)
#: Marks a function in :mod:`grader.hookspecs` as a hook specification.
hookspec = pluggy.HookspecMarker(PROJECT)


def check(name: "str | None" = None, path: "str | None" = None) -> "grader.jupyter.NotebookCheck":  # noqa: F821
    """In a Jupyter notebook: grade the code this notebook's kernel ran, and show the result in the notebook.

    ``check("rnn")`` grades the exercise of the function ``rnn`` (or name the exercise: ``"rnn_scratch"``);
    ``check()`` grades every exercise; ``check("rnn", path="my.ipynb")`` grades a file or folder instead.
    The code runs in separate processes, as with ``grade``, never in the notebook's kernel.
    """
    from grader.jupyter import check as check_notebook  # the judge's front-end, imported only when called

    return check_notebook(name, path)


__all__ = ["hookimpl", "hookspec", "check", "__version__"]
