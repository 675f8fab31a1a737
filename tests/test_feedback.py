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


def test_shortened_text_ends_at_a_sentence_or_a_word():
    from grader.prose import shorten

    error = ("RuntimeError: mat1 and mat2 shapes cannot be multiplied (4x28 and 48x48). Check that the hidden "
             "state has shape (batch, hidden) and multiplies W_hh")
    assert shorten(error, 90) == "RuntimeError: mat1 and mat2 shapes cannot be multiplied (4x28 and 48x48). …"
    words = "zero_grad backward clip step " * 10
    cut = shorten(words, 50)
    assert len(cut) <= 50 and cut.endswith("…") and cut[:-1].split()[-1] in {"zero_grad", "backward", "clip", "step"}
    assert shorten("x" * 500, 100) == "x" * 99 + "…"  # one long token: cut where it must be
    assert shorten(error, 1000) == error
