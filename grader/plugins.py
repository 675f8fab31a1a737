"""The plugin manager: exercise and harness hook specs, built-in plugins, entry points."""

from __future__ import annotations

import functools
import importlib
from typing import Callable

import pluggy

from grader import PROJECT, hookspecs

#: Entry-point group through which installed packages add checks or reporters.
ENTRY_POINT_GROUP = "rnn_grader"

#: Built-in plugins, imported on demand so that importing grader has no side effects.
BUILTIN_CHECKS = (
    "grader.checks.rnn_scratch",
    "grader.checks.grad_clipping",
    "grader.checks.predict",
    "grader.checks.train_epoch",
    "grader.checks.rnn_concise",
    "grader.checks.sine_wave",
    "grader.checks.gradient_flow",
)
#: the reference's modules (``reference.<name>``), one per exercise
REFERENCE_MODULES = ("rnn_scratch", "grad_clipping", "predict", "train_epoch", "rnn_concise", "sine_wave", "gradient_flow")
BUILTIN_REPORTERS = (
    "grader.terminal",
    "grader.html_report",
    "grader.gradescope",
)


def get_plugin_manager(with_builtins: bool = True, reporters: bool = False, entry_points: bool = True) -> pluggy.PluginManager:
    """A plugin manager with the hook specs added and, optionally, the built-in plugins.

    :param with_builtins: register the built-in checks.
    :param reporters: register the built-in reporters too.
    :param entry_points: load third-party plugins from the ``rnn_grader`` entry-point group.
    """
    pm = pluggy.PluginManager(PROJECT)
    pm.add_hookspecs(hookspecs)
    if with_builtins:
        # pluggy calls the most recently registered plugin first; register in reverse
        # so that exercises come out in the order the lesson teaches them.
        for name in reversed(BUILTIN_CHECKS + (BUILTIN_REPORTERS if reporters else ())):
            pm.register(importlib.import_module(name), name=name)
        if entry_points:
            pm.load_setuptools_entrypoints(ENTRY_POINT_GROUP)
        pm.check_pending()
    return pm


@functools.lru_cache(maxsize=1)
def get_reference_manager() -> pluggy.PluginManager:
    """A plugin manager holding the reference implementations, called like a submission's."""
    pm = pluggy.PluginManager(PROJECT)
    pm.add_hookspecs(hookspecs)
    for name in REFERENCE_MODULES:
        pm.register(importlib.import_module(f"reference.{name}"), name=f"reference.{name}")
    pm.check_pending()
    return pm


def reference_hooks() -> dict[str, Callable]:
    """The reference's exercise functions by hook name, for scaffolding around a student's."""
    pm = get_reference_manager()
    return {name: getattr(pm.hook, name).get_hookimpls()[0].function for name in hookspecs.EXERCISE_HOOKS}
