"""``predict``'s device check: on ``meta`` (no GPU needed) a stand-in model records where every input it is fed
lives; a loop that builds its inputs on the CPU whatever ``device`` it is given loses that check only."""

from __future__ import annotations

import pytest

from conftest import by_exercise, lost, mutate

from test_alternatives import PREDICT_WHOLE_PREFIX

NO_DEVICE = mutate("predict.py", "torch.tensor([outputs[-1]], device=device)", "torch.tensor([outputs[-1]])")
STATE_ON_CPU = mutate("predict.py", "net.begin_state(batch_size=1, device=device)",
                      "net.begin_state(batch_size=1, device=torch.device('cpu'))")


def predict_checks(report) -> dict:
    return {c.check_id: c for c in by_exercise(report)["predict"].checks}


def test_the_reference_keeps_full_marks_and_the_total_is_unchanged(submission, grading):
    report = grading(submission())
    checks = predict_checks(report)
    assert "predict.device.meta" in checks
    assert all(c.status == "passed" for c in checks.values()), [(c.check_id, c.message) for c in checks.values()]
    assert by_exercise(report)["predict"].max_points == pytest.approx(10)
    assert "on meta" in checks["predict.device.meta"].message
    assert not lost(report)


def test_inputs_built_on_the_cpu_lose_the_device_check_only(submission, grading):
    report = grading(submission(NO_DEVICE))
    checks = predict_checks(report)
    failed = {c for c, check in checks.items() if check.status != "passed"}
    assert failed == {"predict.device.meta"}, [(c.check_id, c.message) for c in checks.values()]
    message = checks["predict.device.meta"].message
    assert "input on cpu while device was meta" in message and "device=device" in message
    assert lost(report) == {"predict": pytest.approx(1)}


def test_a_state_asked_for_on_the_cpu_loses_the_device_check(submission, grading):
    report = grading(submission(STATE_ON_CPU))
    checks = predict_checks(report)
    failed = {c for c, check in checks.items() if check.status != "passed"}
    assert failed == {"predict.device.meta"}, [(c.check_id, c.message) for c in checks.values()]
    assert "begin_state" in checks["predict.device.meta"].message
    assert lost(report) == {"predict": pytest.approx(1)}


def test_feeding_the_argmax_tensor_back_keeps_the_device_check(submission, grading):
    # the next input is the model's own output (argmax, reshaped): on meta it must stay on meta and still be
    # readable with int(), as it would be on a GPU
    report = grading(submission({"predict.py": PREDICT_WHOLE_PREFIX}))
    checks = predict_checks(report)
    assert all(c.status == "passed" for c in checks.values()), [(c.check_id, c.message) for c in checks.values()]
    assert not lost(report)
