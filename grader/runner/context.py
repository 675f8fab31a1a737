"""What a probe sees: the student's hook under test, the reference's hooks, and a safe way to call code."""

from __future__ import annotations

import functools
from typing import Any, Callable

from grader.runner.loader import LoadedSubmission
from grader.runner.tracebacks import describe_exception, raised_by_student


class NotImplementedHook(Exception):
    """The submission has no implementation of a hook a probe needs."""


class TorchError(RuntimeError):
    """torch raised NotImplementedError inside a student's hook (e.g. an op without a 'meta' kernel).

    A NotImplementedError counts as "hook not implemented"; this one is an error in a hook that is.
    """


class ProbeContext:
    """Handed to ``probe(ctx, **params)`` in the runner's child."""

    def __init__(self, loaded: LoadedSubmission, reference: dict[str, Callable], hook: str | None):
        self.loaded = loaded
        #: the reference's exercise functions by hook name, for everything around the student's
        self.reference = reference
        #: the hook this run grades
        self.hook = hook

    def student(self, name: str) -> Callable:
        """The student's ``name`` hook; a NotImplementedError that torch raises in it becomes a :class:`TorchError`.

        :raises NotImplementedHook: the submission does not implement ``name``.
        """
        func = self.loaded.hooks.get(name)
        if func is None:
            raise NotImplementedHook(name)
        folder = self.loaded.folder

        @functools.wraps(func)
        def call(*args: Any, **kwargs: Any) -> Any:
            try:
                return func(*args, **kwargs)
            except NotImplementedError as exc:
                if raised_by_student(exc, folder):
                    raise
                raise TorchError(f"NotImplementedError: {exc}").with_traceback(exc.__traceback__) from None

        return call

    def attempt(self, call: Callable[[], Any]) -> Any:
        """``call()``, or ``{"error": ...}`` when the student's code raises, so one failing run leaves the others judged.

        A ``NotImplementedError`` the student raised still propagates: the hook counts as not implemented.
        """
        try:
            return call()
        except NotImplementedError as exc:
            if raised_by_student(exc, self.loaded.folder):
                raise
            return {"error": describe_exception(exc, self.loaded.folder)}
        except Exception as exc:  # noqa: BLE001 - what the student's code raised is the finding
            return {"error": describe_exception(exc, self.loaded.folder)}
