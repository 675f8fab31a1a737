"""No misconception recognises a correct solution's behaviour.

The grader only asks a misconception about a check that did not pass, so on a correct submission
it is never asked. This suite asks anyway: every recogniser is shown the data of every run of the
reference and of each correct alternative style, as if the check had failed, and must make no
claim. A recogniser that matched here would misname a mistake whenever a correct-looking result
failed for another reason.
"""

from __future__ import annotations

import pytest

from test_alternatives import STYLES

from grader.config import RunConfig
from grader.definitions import Evidence
from grader.judge import engine
from grader.judge.diagnosis import applicable
from grader.plugins import get_plugin_manager
from grader.results import FAILED

SUBMISSIONS = {"reference": {}, **STYLES}


@pytest.fixture(scope="module")
def pm():
    return get_plugin_manager()


def correct_runs(pm, runner, folder) -> list[tuple]:
    """``([(check, observed)], report)``: every run of the submission in ``folder``, and its grading."""
    config = RunConfig()
    plan = engine.plan(pm, config)
    seen: list[tuple] = []
    judged = plan.judged

    def spy(check, decoded, result):
        if decoded.value is not None and decoded.failure is None:
            seen.append((check, decoded.value.get("value")))
        return judged(check, decoded, result)

    plan.judged = spy
    report = engine.grade(folder, config, pm, runner, plan)
    return seen, report


@pytest.mark.parametrize("name", list(SUBMISSIONS))
def test_no_misconception_claims_a_correct_run(name, pm, runner, submission):
    runs, report = correct_runs(pm, runner, submission(SUBMISSIONS[name]))  # None removes a reference file
    assert report.points == report.max_points
    plan = engine.plan(pm, RunConfig())
    assert plan.misconceptions, "the built-in catalogue is registered"
    claims = []
    for check, observed in runs:
        for entry in applicable(check.id, plan.misconceptions):
            evidence = Evidence(check.id, observed, dict(check.probe.params), FAILED, "")
            try:
                matched = bool(entry.recognise(evidence))
            except Exception:  # noqa: BLE001 - an exception is no claim, as in the grader
                matched = False
            if matched:
                claims.append(f"{entry.key} on {check.id}")
    assert not claims, f"{name}: correct behaviour recognised as a mistake: {claims}"
