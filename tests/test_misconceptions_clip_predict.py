"""The misconceptions of ``grad_clipping`` and ``predict``: each realistic single mistake is named on its own check.

Every submission is the reference with one function edited. Each must lose points, and the check that carries
the diagnosis must name the mistake's key; the reference and the correct alternative styles are told no
misconception. The norm a clipping used is worked back from its result; the direct tests below show it on
gradients clipped by hand.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from batch_grading import grade_many, report_of, selected_ids
from conftest import checks_of, edits, listed, mutate
from test_alternatives import STYLES
from test_bug_zoo import CLIP_BUGS, PREDICT_BUGS, rewrite

from grader.checks.grad_clipping import make_grads
from grader.checks.predict import split_tokens
from grader.definitions import Evidence
from grader.judge.misconceptions import grad_clipping as clip_catalogue
from grader.wire import decode, encode

NORM = "torch.sqrt(sum(torch.sum(p.grad ** 2) for p in params))"

#: name -> (files, the check that carries the diagnosis, the misconception it names)
CLIP_MISTAKES = {
    "l1-norm": (mutate("grad_clipping.py", NORM, "sum(torch.sum(torch.abs(p.grad)) for p in params)"),
                "grad_clipping.above", "clip.l1-norm"),
    "no-sqrt": (CLIP_BUGS["clip-forgets-sqrt"].files, "grad_clipping.above", "clip.no-sqrt"),
    "max-abs": (mutate("grad_clipping.py", NORM, "max(p.grad.abs().max() for p in params)"),
                "grad_clipping.above", "clip.max-norm"),
    "first-parameter": (CLIP_BUGS["clip-norm-of-first-parameter"].files, "grad_clipping.above", "clip.one-parameter-norm"),
    "last-parameter-left-in-the-loop": (rewrite("grad_clipping", """
def grad_clipping(net, theta):
    params = [p for p in net.parameters() if p.requires_grad] if isinstance(net, nn.Module) else net.params
    for p in params:
        norm = torch.norm(p.grad)
    if norm > theta:
        for p in params:
            p.grad[:] *= theta / norm
    return norm
"""), "grad_clipping.above", "clip.one-parameter-norm"),
    "mean-instead-of-sum": (mutate("grad_clipping.py", NORM, "torch.sqrt(sum(torch.mean(p.grad ** 2) for p in params))"),
                            "grad_clipping.above", "clip.mean-not-sum"),
    "sum-of-norms": (mutate("grad_clipping.py", NORM, "sum(torch.norm(p.grad) for p in params)"),
                     "grad_clipping.above", "clip.sum-of-norms"),
    "per-parameter": (CLIP_BUGS["clip-per-parameter"].files, "grad_clipping.above", "clip.per-parameter"),
    "clamp": (CLIP_BUGS["clip-by-value"].files, "grad_clipping.above", "clip.by-value"),
    "norm-over-theta": (CLIP_BUGS["clip-scales-by-norm-over-theta"].files, "grad_clipping.above", "clip.norm-over-theta"),
    "always-rescales": (CLIP_BUGS["clip-always-rescales"].files, "grad_clipping.below", "clip.always-rescales"),
    "comparison-flipped": (mutate("grad_clipping.py", "if norm > theta:", "if norm < theta:"),
                           "grad_clipping.below", "clip.comparison-flipped"),
    "return-inside-loop": (CLIP_BUGS["clip-return-inside-loop"].files, "grad_clipping.above", "clip.some-parameters"),
    "modules-only": (CLIP_BUGS["clip-modules-only"].files, "grad_clipping.scratch", "clip.modules-only"),
    "params-only": (mutate("grad_clipping.py", "params = [p for p in net.parameters() if p.requires_grad]",
                           "params = net.params"), "grad_clipping.above", "clip.params-only"),
    "norm-of-values": (mutate("grad_clipping.py", NORM, "torch.sqrt(sum(torch.sum(p.data ** 2) for p in params))"),
                       "grad_clipping.above", "clip.norm-of-values"),
}

APPEND = "outputs.append(int(y.argmax(dim=1).reshape(1)))"
WARM_UP = "        _, state = net(get_input(), state)\n"
PREDICT_MISTAKES = {
    "never-appended": (mutate("predict.py", APPEND, "int(y.argmax(dim=1).reshape(1))"),
                       "predict.length", "predict.never-appended"),
    "only-generated": (PREDICT_BUGS["predict-only-generated"].files, "predict.length", "predict.only-generated"),
    "one-too-few": (PREDICT_BUGS["predict-off-by-one"].files, "predict.length", "predict.off-by-one"),
    "one-too-many": (mutate("predict.py", "range(num_preds)", "range(num_preds + 1)"), "predict.length",
                     "predict.off-by-one"),
    "warm-up-outputs": (PREDICT_BUGS["predict-warm-up-outputs"].files, "predict.state", "predict.warm-up-outputs"),
    "skips-the-prefix": (PREDICT_BUGS["predict-skips-the-prefix"].files, "predict.state", "predict.skips-prefix"),
    "fresh-state-after-warm-up": (PREDICT_BUGS["predict-fresh-state-after-warm-up"].files, "predict.state",
                                  "predict.fresh-state-after-warm-up"),
    "warm-up-drops-the-state": (mutate("predict.py", WARM_UP, "        net(get_input(), state)\n"), "predict.state",
                                "predict.fresh-state-after-warm-up"),
    "state-reset-each-step": (PREDICT_BUGS["predict-state-reset-each-step"].files, "predict.state",
                              "predict.state-reset-each-step"),
    "state-never-kept": (edits("predict.py", (WARM_UP, "        net(get_input(), state)\n"),
                               ("y, state = net(get_input(), state)", "y, _ = net(get_input(), state)")),
                         "predict.state", "predict.state-reset-each-step"),
    "argmin": (mutate("predict.py", "y.argmax(dim=1)", "y.argmin(dim=1)"), "predict.text", "predict.argmin"),
    "samples": (PREDICT_BUGS["predict-samples"].files, "predict.text", "predict.samples"),
    "samples-with-temperature": (mutate("predict.py", "int(y.argmax(dim=1).reshape(1))",
                                        "int(torch.multinomial(torch.softmax(y / 0.8, dim=1), 1))"),
                                 "predict.text", "predict.samples"),
    "prefix-not-sliced": (mutate("predict.py", "for y in prefix[1:]:", "for y in prefix:"), "predict.state",
                          "predict.prefix-not-sliced"),
    "feeds-last-prefix-character": (edits("predict.py", ("y, state = net(get_input(), state)",
                                                         "y, state = net(torch.tensor([[vocab[prefix[-1]]]], "
                                                         "device=device), state)")),
                                    "predict.state", "predict.feeds-last-prefix-character"),
}

MISTAKES = {**{f"clip-{n}": m for n, m in CLIP_MISTAKES.items()}, **{f"predict-{n}": m for n, m in PREDICT_MISTAKES.items()}}
CORRECT = {"reference": {}, **{n: files for n, files in STYLES.items() if n.startswith(("clip-", "predict-"))}}


@pytest.fixture(scope="module")
def reports(request, runner, tmp_path_factory):
    """Every submission this session's tests ask for, graded in one batch."""
    wanted = set(selected_ids(request)) | {"predict-argmin"}  # the argmin run also shows how <unk> is counted
    cases = {**{n: files for n, (files, _, _) in MISTAKES.items() if n in wanted},
             **{f"correct-{n}": f for n, f in CORRECT.items() if n in wanted}}
    return grade_many(runner, tmp_path_factory.mktemp("clip-predict"), cases)


@pytest.mark.parametrize("name", list(MISTAKES))
def test_the_mistake_is_named_on_its_check(reports, name: str):
    _, carrier, key = MISTAKES[name]
    exercise = carrier.split(".")[0]
    report = report_of(reports, name)
    checks = checks_of(report, exercise)
    assert checks[carrier].status != "passed", listed(checks)
    assert checks[carrier].misconception == key, listed(checks)
    assert checks[carrier].same_cause_as in (None, ""), listed(checks)
    assert checks[carrier].message.startswith("Likely mistake: ")
    # the other failing checks of the function either name the same cause or say what they saw, never another key
    others = {c.misconception for c in checks.values() if c.misconception} - {key}
    assert not others, listed(checks)
    assert not [c for c in report.all_checks() if c.status != "passed" and not c.check_id.startswith(exercise + ".")]
    cut = [c.check_id for c in checks.values() if c.status != "passed" and "…" in c.message]
    assert not cut, listed(checks)  # a "same cause as" line repeats the mistake whole


@pytest.mark.parametrize("name", list(CORRECT))
def test_a_correct_submission_is_told_no_misconception(reports, name: str):
    report = report_of(reports, f"correct-{name}")
    assert report.points == report.max_points
    assert not [c.check_id for c in report.all_checks() if c.misconception or c.same_cause_as]


# --- the norm worked back from clipped gradients ---------------------------------------------------------------------

def _evidence(case: str, seed: int, grads: list) -> Evidence:
    """The data a grad_clipping check would see, had the student's function left ``grads`` (in the probe's layout)."""
    observed = decode(encode({"grads": grads, "params_unchanged": True}))
    return Evidence(f"grad_clipping.{case}", observed, {"case": case, "seed": seed, "value_seed": 99}, "failed", "")


def _clipped(case: str, seed: int, norm) -> list:
    grads, theta = make_grads(case, seed)
    n = float(norm(grads))
    return [g * min(1.0, theta / n) for g in grads]


ENTRIES = {m.key: m for m in clip_catalogue.grader_misconceptions(None)}
NORMS = {
    "clip.l1-norm": lambda gs: sum(g.abs().sum() for g in gs),
    "clip.no-sqrt": lambda gs: sum((g ** 2).sum() for g in gs),
    "clip.max-norm": lambda gs: max(g.abs().max() for g in gs),
    "clip.sum-of-norms": lambda gs: sum(g.norm() for g in gs),
    "clip.one-parameter-norm": lambda gs: gs[2].norm(),
}


@pytest.mark.parametrize("key", list(NORMS))
def test_the_norm_used_is_worked_back_from_the_clipped_gradients(key):
    evidence = _evidence("above", 7, _clipped("above", 7, NORMS[key]))
    claims = [k for k, entry in ENTRIES.items() if entry.recognise(evidence)]
    assert claims == [key]


@pytest.mark.parametrize("norm_type, key", [(1.0, "clip.l1-norm"), (float("inf"), "clip.max-norm")])
def test_clip_grad_norm_with_another_norm_type_is_named(norm_type, key):
    grads, theta = make_grads("above", 7)
    params = [torch.zeros_like(g, requires_grad=True) for g in grads]
    for p, g in zip(params, grads):
        p.grad = g.clone()
    torch.nn.utils.clip_grad_norm_(params, theta, norm_type=norm_type)
    evidence = _evidence("above", 7, [p.grad for p in params])
    assert [k for k, entry in ENTRIES.items() if entry.recognise(evidence)] == [key]


def test_gradients_clipped_by_the_joint_norm_are_no_mistake():
    for case, seed in (("above", 7), ("below", 5), ("scratch", 6), ("joint", 4)):
        evidence = _evidence(case, seed, _clipped(case, seed, lambda gs: torch.sqrt(sum((g ** 2).sum() for g in gs))))
        assert not [k for k, entry in ENTRIES.items() if entry.recognise(evidence)], case


def test_norm_used_names_only_what_the_scale_can_tell():
    grads, theta = make_grads("above", 7)
    given = [g.numpy().astype(np.float64) for g in grads]
    l1 = float(sum(np.abs(g).sum() for g in given))
    assert clip_catalogue.norm_used(given, [g * theta / l1 for g in given], theta) == ("l1",)
    assert clip_catalogue.norm_used(given, given, theta) is None  # unchanged: every norm at most θ fits
    assert clip_catalogue.norm_used(given, [g * 0.123456 for g in given], theta) is None  # no candidate
    assert clip_catalogue.norm_used(given, [given[0] * 0.5, *given[1:]], theta) is None  # not one common factor
    # joint: every parameter has the same norm, so "one parameter" is all that can be said
    grads, theta = make_grads("joint", 4)
    given = [g.numpy().astype(np.float64) for g in grads]
    own = float(np.linalg.norm(given[0]))
    assert set(clip_catalogue.norm_used(given, [g * min(1, theta / own) for g in given], theta) or ()) <= \
        {f"param-{k}" for k in range(1, 5)}


# --- predict's messages count tokens --------------------------------------------------------------------------------

def test_unk_is_one_token_not_five_characters():
    tokens = ["<unk>", " ", "a", "b"]
    assert split_tokens("ab<unk> <unk>", tokens) == ["a", "b", "<unk>", " ", "<unk>"]
    assert split_tokens("a<un", tokens) == ["a", "<", "u", "n"]


def test_an_unk_prediction_is_counted_and_shown_whole(reports):
    checks = checks_of(report_of(reports, "predict-argmin"), "predict")
    assert checks["predict.length"].status == "passed", listed(checks)  # num_preds tokens, each <unk> counted once
    if checks["predict.state"].status != "passed":
        assert "<unk>unk" not in checks["predict.state"].details + checks["predict.state"].message


def test_the_feed_message_shows_generated_tokens_whole():
    from grader.checks.predict import judge_length, judge_state

    model = {"tokens": ["<unk>", " ", "a", "b"]}
    calls = [{"tokens": [t], "shape": [1, 1], "continued": True, "fresh": k == 0} for k, t in enumerate([2, 3, 1, 1])]
    observed = [{"text": "ab<unk><unk>a", "kind": "str", "calls": calls, "begin_states": 1}]
    assert judge_length(observed, model, [["ab", 3]]).status == "passed"  # three predictions, two of them <unk>
    message = judge_state(observed, model, [["ab", 3]]).message
    assert "'ab␣␣'" in message and "'ab<unk><unk>'" in message and "<unk>unk" not in message, message
    assert "the prefix one character at a time, then each token it predicted" in message


def test_every_mistake_is_short_enough_to_be_repeated_whole():
    from grader.judge.diagnosis import CAUSE_LIMIT
    from grader.judge.misconceptions import predict as predict_catalogue

    entries = clip_catalogue.grader_misconceptions(None) + predict_catalogue.grader_misconceptions(None)
    assert len({m.key for m in entries}) == len(entries)
    assert not [m.key for m in entries if len(m.mistake) > CAUSE_LIMIT]  # "same cause as" repeats it uncut
