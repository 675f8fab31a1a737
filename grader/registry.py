"""The built-in exercises, in the order the lesson teaches them, and every name derived from them.

An exercise ``NAME`` has five parts, all found from here: its hook specs in
:mod:`grader.hookspecs`, the reference ``reference/NAME.py`` (``grader.reference.NAME``), the
skeleton ``exercises/NAME.py`` (``grader.skeletons``), the demo's ``grader/demo/NAME.py`` and
its checks ``grader/checks/NAME.py``. ``tests/test_architecture.py`` fails when one is missing.
"""

from __future__ import annotations

import importlib.util
import os

from grader import hookimpl
from grader.definitions import Exercise

EXERCISES = (
    Exercise("rnn_scratch", "Scratch RNN language model", ("get_params", "init_rnn_state", "rnn"),
             "parameters, initial state and the recurrence of the from-scratch model"),
    Exercise("grad_clipping", "Gradient clipping", ("grad_clipping",),
             "rescale all gradients together so their joint L2 norm is at most θ"),
    Exercise("predict", "Greedy prediction", ("predict",),
             "warm the state up on a prefix, then generate characters one argmax at a time"),
    Exercise("train_epoch", "Training epoch", ("train_epoch",),
             "truncated back-propagation through time with state handling and clipping"),
    Exercise("rnn_concise", "Concise RNN language model", ("rnn_model",),
             "nn.RNN plus nn.Linear: equal to the scratch model, for every kind of recurrent layer"),
    Exercise("sine_wave", "Sine-wave regression with nn.RNN", ("sine_model",),
             "a batch-first recurrent regressor that predicts a sine wave one step ahead"),
    Exercise("gradient_flow", "Gradient flow through time", ("state_jacobian",),
             "the Jacobian of one recurrent step, and why its product over time vanishes or explodes"),
)

#: the hooks a student implements, in lesson order
EXERCISE_HOOKS = tuple(hook for exercise in EXERCISES for hook in exercise.hooks)
#: hook -> the exercise it belongs to
EXERCISE_OF_HOOK = {hook: exercise.name for exercise in EXERCISES for hook in exercise.hooks}
#: the packages holding one module per exercise
CHECKS_PACKAGE, REFERENCE_PACKAGE = "grader.checks", "grader.reference"
MISCONCEPTIONS_PACKAGE = "grader.judge.misconceptions"
#: the demo submission: nearly every function correct, so as much an answer as the reference
DEMO_PACKAGE = "grader.demo"
#: packages that hold answers: never loaded in the runner, never visible in its sandbox (a checkout's
#: ``reference`` folder is importable as a top-level package too)
ANSWER_PACKAGES = (REFERENCE_PACKAGE, DEMO_PACKAGE, "reference")


def answer_dirs() -> tuple[str, ...]:
    """Every folder an answer package is importable from, found without importing it."""
    found = []
    for package in ANSWER_PACKAGES:
        try:
            spec = importlib.util.find_spec(package)
        except (ImportError, ValueError):
            continue
        if spec is not None and spec.submodule_search_locations:
            found += [os.path.realpath(p) for p in spec.submodule_search_locations]
    return tuple(sorted(set(found)))


def file_name(exercise: str) -> str:
    """The file that holds an exercise in a submission, the reference, the skeletons and the demo."""
    return f"{exercise}.py"


def checks_module(exercise: str) -> str:
    return f"{CHECKS_PACKAGE}.{exercise}"


def misconceptions_module(exercise: str) -> str:
    """The exercise's built-in misconception catalogue (judge side: never imported by the runner)."""
    return f"{MISCONCEPTIONS_PACKAGE}.{exercise}"


def reference_module(exercise: str) -> str:
    return f"{REFERENCE_PACKAGE}.{exercise}"


@hookimpl
def grader_exercises():
    return list(EXERCISES)
