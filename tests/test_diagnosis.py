"""Misconceptions: who is diagnosed, who carries a shared cause, and a pack's own entries."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import pytest

from conftest import REFERENCE
from grader.config import RunConfig
from grader.definitions import Check, Evidence, Misconception, Probe
from grader.judge import diagnosis, engine
from grader.plugins import get_plugin_manager
from grader.results import ERROR, FAILED, NOT_IMPLEMENTED, PASSED, CheckResult, Verdict

REPO = Path(__file__).resolve().parents[1]
PACK = REPO / "examples" / "check_pack"


def _probe_run(ctx, seed):  # never runs: these tests judge by hand
    return None


PROBE = Probe("rnn", _probe_run, {"seed": 3})


def check(name: str = "rnn.forward") -> Check:
    return Check("rnn_scratch", name, name, 1, PROBE, lambda observed, seed: Verdict.passed())


def entry(key: str, recognise, checks=("rnn_scratch.rnn.*",)) -> Misconception:
    return Misconception(key, checks, f"mistake {key}", "Why it is wrong.", "the fix", recognise)


def result(name: str, status: str = FAILED, message: str = "outputs differ", hook: str = "rnn", **kw) -> CheckResult:
    return CheckResult(f"rnn_scratch.{name}", "rnn_scratch", name, (hook,), 1.0, 0.0, status, message, **kw)


def test_only_a_check_that_did_not_pass_is_diagnosed():
    always = entry("always", lambda evidence: True)
    for status in (PASSED, NOT_IMPLEMENTED):
        verdict = Verdict(status, "fine")
        assert diagnosis.diagnose(check(), {}, verdict, [always]) is verdict
    for status in (FAILED, ERROR):
        told = diagnosis.diagnose(check(), {}, Verdict(status, "outputs differ at step 3"), [always])
        assert told.status == status and told.misconception == "always"
        assert told.message == "Likely mistake: mistake always. Why it is wrong. Fix: the fix"
        assert "What the check saw: outputs differ at step 3" in told.details  # the observation is kept


def test_a_recogniser_sees_the_run_and_the_first_match_wins():
    seen: list[Evidence] = []

    def broken(evidence):
        seen.append(evidence)
        raise KeyError("no such field")  # a recogniser that cannot read the data claims nothing

    entries = [entry("broken", broken), entry("no", lambda e: False), entry("yes", lambda e: e.observed["x"] == 1),
               entry("later", lambda e: True)]
    told = diagnosis.diagnose(check(), {"x": 1}, Verdict.failed("differ"), entries)
    assert told.misconception == "yes"
    assert seen[0] == Evidence("rnn_scratch.rnn.forward", {"x": 1}, {"seed": 3}, FAILED, "differ")
    untouched = Verdict.failed("differ")
    assert diagnosis.diagnose(check(), {"x": 2}, untouched, entries[:3]) is untouched  # no match, no claim


def test_entries_apply_by_check_pattern():
    entries = [entry("a", bool, ("rnn_scratch.rnn.forward",)), entry("b", bool, ("rnn_scratch.*",)),
               entry("c", bool, ("predict.*",))]
    assert [m.key for m in diagnosis.applicable("rnn_scratch.rnn.forward", entries)] == ["a", "b"]
    assert [m.key for m in diagnosis.applicable("rnn_scratch.rnn.gradients", entries)] == ["b"]


def test_a_shared_cause_is_told_once_by_the_most_specific_check():
    relu = entry("relu", bool, ("rnn_scratch.rnn.carries_state", "rnn_scratch.rnn.*"))
    results = [result("rnn.forward", misconception="relu", message=relu.wording()),
               result("rnn.carries_state", misconception="relu", message=relu.wording()),
               result("rnn.gradients", misconception="relu", message=relu.wording(), details="What the check saw: x"),
               result("rnn.shapes", PASSED, "fine")]
    told = {r.check_id: r for r in diagnosis.tell_each_cause_once(results, [relu])}
    carrier = told["rnn_scratch.rnn.carries_state"]
    assert carrier.message == relu.wording() and not carrier.same_cause_as
    for other in ("rnn_scratch.rnn.forward", "rnn_scratch.rnn.gradients"):
        assert told[other].message == "same cause as rnn_scratch.rnn.carries_state (mistake relu)"
        assert told[other].same_cause_as == "rnn_scratch.rnn.carries_state"
        assert told[other].points == 0.0  # each check still costs its points
    assert told["rnn_scratch.rnn.gradients"].details == "What the check saw: x"
    assert told["rnn_scratch.rnn.shapes"] == results[3]


def test_identical_messages_of_one_function_are_told_once_and_other_functions_keep_theirs():
    results = [result("rnn.forward", message="outputs have shape (35, 4, 28)"),
               result("rnn.gradients", ERROR, message="outputs have shape (35, 4, 28)"),
               result("params.shapes", message="outputs have shape (35, 4, 28)", hook="get_params"),
               result("rnn.carries_state", message="something else")]
    told = diagnosis.tell_each_cause_once(results, [])
    assert [r.same_cause_as for r in told] == ["", "rnn_scratch.rnn.forward", "", ""]
    assert told[1].message.startswith("same cause as rnn_scratch.rnn.forward (outputs have shape")


def test_a_hidden_check_never_carries_a_cause_a_visible_one_shares():
    results = [result("rnn.hidden_case", message="same text", visibility="hidden"), result("rnn.forward", message="same text")]
    told = diagnosis.tell_each_cause_once(results, [])
    assert told[1].message == "same text" and told[0].same_cause_as == "rnn_scratch.rnn.forward"


def test_a_pack_entry_is_tried_before_the_built_in_ones():
    pm = get_plugin_manager(plugin_dirs=[PACK])
    entries = diagnosis.catalogue(pm, None)
    keys = [m.key for m in entries]
    assert keys[0] == "course.clip-per-layer"
    assert len(keys) == len(set(keys)), "misconception keys are unique"
    assert all(m.checks and m.mistake and m.fix for m in entries)
    plan_keys = {m.key for m in engine.plan(get_plugin_manager(), RunConfig()).misconceptions}
    assert "course.clip-per-layer" not in plan_keys  # only where the pack is loaded


PER_LAYER = '''

def grad_clipping(net, theta):
    if isinstance(net, nn.Module):
        groups = [list(m.parameters(recurse=False)) for m in net.modules()]
    else:
        groups = [net.params]
    for params in [g for g in groups if g]:
        norm = torch.sqrt(sum(torch.sum(p.grad ** 2) for p in params))
        if norm > theta:
            for p in params:
                p.grad[:] *= theta / norm
'''


def test_a_packs_misconception_names_the_mistake_on_its_own_check(runner, submission):
    source = (REFERENCE / "grad_clipping.py").read_text()
    start = source.index("\n\n@hookimpl\ndef grad_clipping(")
    end = source.index("\n\n\n", start + 3) if "\n\n\n" in source[start + 3:] else len(source)
    wrong = source[:start] + "\n\n@hookimpl" + PER_LAYER + source[end:]
    config = RunConfig(hidden=True, plugin_dirs=(PACK,))
    pm = get_plugin_manager(plugin_dirs=[PACK])
    report = engine.grade(submission({"grad_clipping.py": wrong}), config, pm, runner, engine.plan(pm, config))
    deep = {c.check_id: c for c in report.all_checks()}["grad_clipping.deep_network"]
    assert deep.status == FAILED and deep.misconception == "course.clip-per-layer", deep
    assert deep.message.startswith("Likely mistake: the gradients are clipped one layer at a time")
    assert "joint gradient norm" in deep.details  # the check's own words stay, below the diagnosis
    clean = engine.grade(submission(), config, pm, runner, engine.plan(pm, config))
    assert not [c.check_id for c in clean.all_checks() if c.misconception or c.same_cause_as]


@pytest.mark.parametrize("status", [FAILED, ERROR])
def test_the_diagnosis_reaches_the_record(status):
    told = diagnosis.diagnose(check(), {}, Verdict(status, "x"), [entry("k", lambda e: True)])
    record = engine._record(check(), told)
    assert asdict(record)["misconception"] == "k"  # results.json and the batch records carry it


def test_explain_lists_the_mistakes_a_check_names():
    from grader.report import catalog

    pm = get_plugin_manager()
    plan = catalog.planned(pm, RunConfig())
    by_id = {c.id: c for c in plan.checks}
    text = catalog.describe(by_id["rnn_scratch.rnn.forward"], plan)
    assert "Mistakes it names when it fails:" in text
    assert "rnn.relu-activation" in text and "the hidden state uses ReLU instead of tanh" in text
    assert "clip." not in text  # only the entries that may explain this check
