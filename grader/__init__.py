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

__all__ = ["hookimpl", "hookspec", "__version__"]
