"""The runner's integrity snapshot, checked quickly in every child, still names every change.

A child compares what the snapshot holds by identity and looks names up only where something
differs; these cases pin that every kind of change is still found, under the name it always had.
"""

from __future__ import annotations

import sys
import types

import pytest
import torch

import grader.compare
import grader.wire
from grader.runner import loader
from grader.runner.integrity import Snapshot


@pytest.fixture(scope="module")
def snapshot() -> Snapshot:
    return Snapshot(answer_folders=())


def test_an_untouched_world_has_no_changes(snapshot):
    assert snapshot.changes() == []


def test_new_names_are_not_changes(snapshot, monkeypatch):
    monkeypatch.setattr(grader.wire, "brand_new_helper", lambda: None, raising=False)
    monkeypatch.setattr(torch.Tensor, "brand_new_method", lambda self: None, raising=False)
    assert snapshot.changes() == []


def test_a_rebound_torch_function_is_named(snapshot, monkeypatch):
    monkeypatch.setattr(torch, "allclose", lambda *a, **k: True)
    assert snapshot.changes() == ["torch.allclose"]


def test_a_deleted_grader_function_is_named(snapshot, monkeypatch):
    monkeypatch.delattr(grader.wire, "dumps")
    assert snapshot.changes() == ["grader.wire.dumps"]


@pytest.mark.parametrize("part, value", [
    ("__code__", (lambda value: b"{}").__code__),
    ("__defaults__", (True,)),
    ("__kwdefaults__", {"value": None}),
], ids=["code", "defaults", "keyword defaults"])
def test_a_grader_function_given_other_code_or_defaults_is_named(snapshot, monkeypatch, part, value):
    monkeypatch.setattr(grader.wire.dumps, part, value)
    assert snapshot.changes() == ["grader.wire.dumps"]


def test_a_replacement_that_claims_to_be_equal_is_named(snapshot, monkeypatch):
    class EqualToEverything:
        def __eq__(self, other):
            return True

        __hash__ = object.__hash__

        def __call__(self, *args, **kwargs):
            return True

    monkeypatch.setattr(torch, "equal", EqualToEverything())
    assert snapshot.changes() == ["torch.equal"]


def test_a_method_of_a_grader_class_is_named(snapshot, monkeypatch):
    monkeypatch.setattr(loader.LoadedSubmission, "problem", lambda self, *a, **k: None)
    assert snapshot.changes() == ["grader.runner.loader.LoadedSubmission.problem"]


def test_a_replaced_grader_class_is_named_with_its_members(snapshot, monkeypatch):
    class Impostor(loader.LoadedSubmission):
        pass

    monkeypatch.setattr(loader, "LoadedSubmission", Impostor)
    changed = snapshot.changes()
    assert "grader.runner.loader.LoadedSubmission" in changed
    assert "grader.runner.loader.LoadedSubmission.problem" in changed


def test_a_module_replaced_in_sys_modules_is_named_where_it_differs(snapshot, monkeypatch):
    impostor = types.ModuleType("grader.compare")
    vars(impostor).update(vars(grader.compare))
    impostor.check_allclose = lambda *a, **k: None
    monkeypatch.setitem(sys.modules, "grader.compare", impostor)
    assert snapshot.changes() == ["grader.compare.check_allclose"]


def test_a_name_added_to_tensor_that_shadows_tensorbase_is_named(snapshot, monkeypatch):
    monkeypatch.setattr(torch.Tensor, "item", lambda self: 0.0)
    monkeypatch.setattr(torch.Tensor, "tolist", lambda self: [])
    assert sorted(snapshot.changes()) == ["torch.Tensor.item", "torch.Tensor.tolist"]


def test_torch_hooking_an_optimizer_step_is_not_a_change_but_another_wrapper_is(monkeypatch):
    step = torch.optim.SGD.step
    original = getattr(step, "__wrapped__", step)
    monkeypatch.setattr(torch.optim.SGD, "step", original)  # the class as torch has it before its first optimizer
    snapshot = Snapshot(answer_folders=())
    # what making an optimizer does to its class's step
    monkeypatch.setattr(torch.optim.SGD, "step", torch.optim.Optimizer.profile_hook_step(original))
    assert snapshot.changes() == []

    def wrapper(*args, **kwargs):  # named like torch's, but not torch's
        return original(*args, **kwargs)

    wrapper.__wrapped__ = original
    monkeypatch.setattr(torch.optim.SGD, "step", wrapper)
    assert snapshot.changes() == ["torch.optim.sgd.SGD.step"]


def test_restore_puts_back_every_kind_of_change(snapshot, monkeypatch):
    """What the zygote does after a preloaded package's import changed what the runner relies on."""
    allclose, dumps_code, problem = torch.allclose, grader.wire.dumps.__code__, loader.LoadedSubmission.problem
    impostor = types.ModuleType("grader.compare")
    vars(impostor).update(vars(grader.compare))
    monkeypatch.setattr(torch, "allclose", lambda *a, **k: True)
    monkeypatch.setattr(grader.wire.dumps, "__code__", (lambda value: b"{}").__code__)
    monkeypatch.setattr(loader.LoadedSubmission, "problem", lambda self, *a, **k: None)
    monkeypatch.setitem(sys.modules, "grader.compare", impostor)
    torch.Tensor.item = lambda self: 0.0  # restore removes it; monkeypatch would remove it again
    try:
        assert len(snapshot.changes()) >= 4
        assert snapshot.restore() == []
    finally:
        if "item" in vars(torch.Tensor):
            del torch.Tensor.item
    assert torch.allclose is allclose and grader.wire.dumps.__code__ is dumps_code
    assert loader.LoadedSubmission.problem is problem and "item" not in vars(torch.Tensor)
    assert sys.modules["grader.compare"] is grader.compare
