"""What the grader says around its checks: explanations given once per report."""

from __future__ import annotations

from grader.judge.engine import META_NOTICE

from conftest import REFERENCE


def test_the_meta_device_is_explained_once_when_a_check_on_it_fails(grading, submission):
    source = (REFERENCE / "rnn_scratch.py").read_text()
    assert "device=device" in source
    # the classic mistake: tensors created on the CPU whatever device they are asked for
    report = grading(submission({"rnn_scratch.py": source.replace("device=device", "device='cpu'")}))
    failed = [c for c in report.all_checks() if c.check_id.endswith(".device.meta") and c.status != "passed"]
    assert failed and all(c.exercise == "rnn_scratch" for c in failed)
    assert report.notices.count(META_NOTICE) == 1
    assert META_NOTICE not in grading(submission()).notices
