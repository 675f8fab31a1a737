"""The plugin manager (hook specs, built-in plugins, entry points) and the reference's hooks."""

from __future__ import annotations

import functools
import importlib
from pathlib import Path
from typing import Callable, Sequence

import pluggy

from grader import PROJECT, hookspecs, packs, registry

#: Entry-point group through which installed packages add checks or reporters.
ENTRY_POINT_GROUP = "rnn_grader"

#: Built-in plugins, imported on demand so that importing grader has no side effects: the
#: registry (the exercises) and one checks module per exercise.
BUILTIN_PLUGINS = ("grader.registry", *(registry.checks_module(ex.name) for ex in registry.EXERCISES),
                   *(registry.misconceptions_module(ex.name) for ex in registry.EXERCISES))
BUILTIN_REPORTERS = (
    "grader.report.terminal",
    "grader.report.html",
    "grader.report.gradescope",
    "grader.report.junit",
    "grader.report.github",
)


def get_plugin_manager(with_builtins: bool = True, reporters: bool = False, entry_points: bool = True,
                       plugin_dirs: Sequence[Path] = ()) -> pluggy.PluginManager:
    """A plugin manager with the hook specs added and, optionally, the built-in plugins.

    :param with_builtins: register the built-in exercises and checks.
    :param reporters: register the built-in reporters too.
    :param entry_points: load third-party plugins from the ``rnn_grader`` entry-point group.
    :param plugin_dirs: folders of check modules to register (``--plugins``; see :mod:`grader.packs`).
    :raises grader.packs.PackError: a pack cannot be imported.
    """
    pm = pluggy.PluginManager(PROJECT)
    pm.add_hookspecs(hookspecs)
    if with_builtins:
        # pluggy calls the most recently registered plugin first; register in reverse
        # so that exercises come out in the order the lesson teaches them.
        for name in reversed(BUILTIN_PLUGINS + (BUILTIN_REPORTERS if reporters else ())):
            pm.register(importlib.import_module(name), name=name)
        if entry_points:
            pm.load_setuptools_entrypoints(ENTRY_POINT_GROUP)
    for folder in plugin_dirs:
        packs.load_folder(pm, folder)
    if with_builtins or plugin_dirs:
        _check_pending(pm)
    return pm


def _check_pending(pm: pluggy.PluginManager) -> None:
    """pluggy's check, with the plugin and the misspelt hook named in words."""
    try:
        pm.check_pending()
    except pluggy.PluginValidationError as exc:
        raise packs.PackError(f"plugin {pm.get_name(exc.plugin) or exc.plugin}: {exc}; hooks a plugin may implement: "
                              + ", ".join(name for name in dir(hookspecs) if name.startswith("grader_"))) from None


def reference_hooks() -> dict[str, Callable]:
    """The reference's exercise functions by hook name (``grader.reference``), called like a student's."""
    return dict(_reference_hooks())


@functools.lru_cache(maxsize=1)
def _reference_hooks() -> tuple[tuple[str, Callable], ...]:
    # Registered with a plugin manager, so that a reference function whose arguments
    # do not fit its spec is an error here.
    pm = pluggy.PluginManager(PROJECT)
    pm.add_hookspecs(hookspecs)
    for exercise in registry.EXERCISES:
        name = registry.reference_module(exercise.name)
        pm.register(importlib.import_module(name), name=name)
    pm.check_pending()
    return tuple((hook, getattr(pm.hook, hook).get_hookimpls()[0].function) for hook in registry.EXERCISE_HOOKS)
