"""The misconceptions of ``train_epoch``, ``rnn_model``, ``sine_model`` and ``state_jacobian``.

Every submission is the reference with one realistic mistake. It must lose points, and the check that
carries the diagnosis must name the mistake's key; every other failing check of the function either
names a cause of its own or says "same cause as". The reference and the correct alternative styles are
told no misconception. All submissions are graded in one batch.
"""

from __future__ import annotations

import pytest

from batch_grading import grade_many, report_of, selected_ids
from conftest import checks_of, edits, listed, mutate
from test_alternatives import STYLES
from test_bug_zoo import TRAIN_BUGS
from test_lesson_extras import ALTERNATIVES, CONCISE_BUGS, GRADIENT_BUGS, SINE_BUGS

from grader.definitions import Evidence
from grader.judge.diagnosis import CAUSE_LIMIT
from grader.judge.misconceptions import gradient_flow, rnn_concise, sine_wave, train_epoch

T = "train_epoch.py"
DETACH = "            for s in state:\n                s.detach_()\n"
TENSOR_BRANCH = ("        elif isinstance(net, nn.Module) and not isinstance(state, tuple):\n"
                 "            state.detach_()\n")
SCRATCH_UPDATE = "            l.backward()\n            grad_clipping(net, 1)\n            updater(batch_size=1)\n"
OPTIM_UPDATE = "            l.backward()\n            grad_clipping(net, 1)\n            updater.step()\n"
LOSS_SUM = "total_loss += l.item() * y.numel()"
RETURNED = "math.exp(total_loss / total_tokens)"

#: name -> (files, the check that carries the diagnosis, the misconception it names)
TRAIN_MISTAKES = {
    "never-detached": (TRAIN_BUGS["train-state-never-detached"].files, "state.sequential", "state-not-detached"),
    "retain-graph-instead-of-detach": (TRAIN_BUGS["train-retain-graph-instead-of-detach"].files, "state.sequential",
                                       "state-not-detached"),
    "iterates-a-one-tensor-state": (mutate(T, TENSOR_BRANCH, ""), "state.module", "one-tensor-state-iterated"),
    "detaches-a-tuple-as-one": (mutate(T, TENSOR_BRANCH + "        else:\n" + DETACH,
                                       "        else:\n            state.detach_()\n"),
                                "state.sequential", "tuple-state-detached-as-one"),
    "params-of-a-module": (mutate(T, SCRATCH_UPDATE, "            for p in net.params:\n"
                                                     "                if p.grad is not None:\n"
                                                     "                    p.grad.zero_()\n" + SCRATCH_UPDATE),
                           "state.module", "params-of-a-module"),
    "bitwise-and-crashes": (mutate(T, LOSS_SUM, "total_loss += l * 1 & y.numel()"), "reported",
                            "bitwise-and-in-loss-sum"),
    "bitwise-and-sums-zero": (mutate(T, LOSS_SUM, "total_loss += l.item() * (1 & y.numel())"), "reported",
                              "loss-sum-bitwise-and"),
    "labels-not-transposed": (TRAIN_BUGS["train-labels-not-transposed"].files, "labels", "labels-not-transposed"),
    "inputs-as-labels": (TRAIN_BUGS["train-inputs-as-labels"].files, "labels", "inputs-as-labels"),
    "labels-as-inputs": (TRAIN_BUGS["train-labels-as-inputs"].files, "perplexity", "labels-as-inputs"),
    "perplexity-of-last-batch": (TRAIN_BUGS["train-perplexity-of-last-batch"].files, "reported",
                                 "perplexity-of-last-minibatch"),
    "mean-loss-not-exp": (TRAIN_BUGS["train-mean-loss-not-exp"].files, "reported", "mean-loss-not-exponentiated"),
    "loss-sum-not-weighted": (mutate(T, LOSS_SUM, "total_loss += l.item()"), "reported", "loss-sum-not-weighted"),
    "counts-sequences": (mutate(T, "total_tokens += y.numel()", "total_tokens += X.shape[0]"), "reported",
                         "sequences-counted-as-tokens"),
    "returns-seconds": (TRAIN_BUGS["train-returns-seconds"].files, "reported", "seconds-not-speed"),
    "returns-tokens": (mutate(T, "total_tokens / elapsed", "total_tokens"), "reported", "tokens-not-speed"),
    "clips-after-update": (TRAIN_BUGS["train-clips-after-update"].files, "clipping", "unclipped-update"),
    "optimizer-clips-after-step": (TRAIN_BUGS["train-optimizer-clips-after-step"].files, "optimizer",
                                   "clipped-after-step"),
    "no-clipping": (TRAIN_BUGS["train-no-clipping"].files, "clipping", "unclipped-update"),
    "optimizer-no-clipping": (TRAIN_BUGS["train-optimizer-no-clipping"].files, "optimizer", "unclipped-update"),
    "no-zero-grad": (TRAIN_BUGS["train-no-zero-grad"].files, "optimizer", "no-zero-grad"),
    "updater-batch-size": (TRAIN_BUGS["train-updater-batch-size"].files, "perplexity", "updater-batch-size"),
    "state-reset-every-batch": (TRAIN_BUGS["train-state-reset-every-batch"].files, "state.sequential",
                                "state-reset-every-minibatch"),
    "random-iter-never-reset": (TRAIN_BUGS["train-random-iter-never-reset"].files, "state.random",
                                "random-state-carried"),
}

C = "rnn_concise.py"
CONCISE_MISTAKES = {
    "returns-the-output-sequence": (mutate(C, "return output, state", "return output, Y"), "forward.scratch",
                                    "output-sequence-as-state"),
    "returns-the-last-output-step": (mutate(C, "return output, state", "return output, Y[-1:]"), "layers",
                                     "output-sequence-as-state"),
    "inputs-not-transposed": (CONCISE_BUGS["concise-inputs-not-transposed"].files, "forward.scratch",
                              "inputs-not-transposed"),
    "batch-major-rows": (CONCISE_BUGS["concise-batch-major-rows"].files, "forward.scratch", "batch-major-rows"),
    "ignores-state": (CONCISE_BUGS["concise-ignores-state"].files, "forward.scratch", "ignores-state"),
    "state-ignores-layers": (CONCISE_BUGS["concise-state-ignores-layers"].files, "begin_state", "begin-state-rows"),
    "state-ignores-directions": (mutate(C, "self.num_directions * self.rnn.num_layers", "self.rnn.num_layers"),
                                 "begin_state", "begin-state-rows"),
    "lstm-state-one-tensor": (CONCISE_BUGS["concise-lstm-state-not-a-tuple"].files, "begin_state",
                              "lstm-state-one-tensor"),
    "linear-ignores-directions": (CONCISE_BUGS["concise-linear-ignores-directions"].files, "layers",
                                  "linear-ignores-directions"),
    "linear-takes-vocab-size": (mutate(C, "nn.Linear(self.num_hiddens * self.num_directions, self.vocab_size)",
                                       "nn.Linear(self.vocab_size, self.vocab_size)"), "forward.scratch",
                                "linear-takes-vocab-size"),
}

SINE_MISTAKES = {
    "not-batch-first": (SINE_BUGS["sine-not-batch-first"].files, "forward.shapes", "not-batch-first"),
    "ignores-h0": (SINE_BUGS["sine-ignores-h0"].files, "forward.uses_h0", "ignores-h0"),
    "own-zero-state": (SINE_BUGS["sine-own-zero-state-on-cpu"].files, "forward.uses_h0", "ignores-h0"),
    "returns-h0": (SINE_BUGS["sine-returns-h0"].files, "forward.returns_h", "returns-h0"),
    "last-step-only": (SINE_BUGS["sine-last-step-only"].files, "forward.shapes", "one-prediction-per-sequence"),
    "relu-read-out": (SINE_BUGS["sine-relu-read-out"].files, "training", "output-never-negative"),
    "hidden-size-hard-coded": (SINE_BUGS["sine-hidden-size-hard-coded"].files, "forward.shapes", "hidden-size-fixed"),
}

JAC = "return torch.diag(1 - h_next ** 2) @ W_hh.T"
GRADIENT_MISTAKES = {
    "W_hh-not-transposed": (GRADIENT_BUGS["jacobian-W-not-transposed"].files, "jacobian.values", "W_hh-not-transposed"),
    "one-minus-h": (edits("gradient_flow.py", (JAC, "return torch.diag(1 - h_next) @ W_hh.T")), "jacobian.values",
                    "one-minus-h"),
    "no-tanh-derivative": (GRADIENT_BUGS["jacobian-no-tanh-derivative"].files, "jacobian.values", "no-tanh-derivative"),
    "jacobian-transposed": (GRADIENT_BUGS["jacobian-transposed"].files, "jacobian.values", "jacobian-transposed"),
    "derivative-on-columns": (edits("gradient_flow.py", (JAC, "return (1 - h_next ** 2) * W_hh.T")), "jacobian.values",
                              "derivative-on-columns"),
    "tanh-applied-again": (GRADIENT_BUGS["jacobian-tanh-applied-again"].files, "jacobian.values", "tanh-applied-again"),
    "sigmoid-derivative": (edits("gradient_flow.py", (JAC, "return torch.diag(h_next * (1 - h_next)) @ W_hh.T")),
                           "jacobian.values", "sigmoid-derivative"),
    "elementwise-product": (edits("gradient_flow.py", (JAC, "return torch.diag(1 - h_next ** 2) * W_hh.T")),
                            "jacobian.values", "elementwise-product"),
}

MISTAKES = {
    **{f"train-{n}": (f, f"train_epoch.{c}", f"train_epoch.{k}") for n, (f, c, k) in TRAIN_MISTAKES.items()},
    **{f"concise-{n}": (f, f"rnn_concise.{c}", f"rnn_concise.{k}") for n, (f, c, k) in CONCISE_MISTAKES.items()},
    **{f"sine-{n}": (f, f"sine_wave.{c}", f"sine_wave.{k}") for n, (f, c, k) in SINE_MISTAKES.items()},
    **{f"gradient-{n}": (f, f"gradient_flow.{c}", f"gradient_flow.{k}") for n, (f, c, k) in GRADIENT_MISTAKES.items()},
}
CORRECT = {"reference": {}, **{n: f for n, f in STYLES.items() if n.startswith("train-") or "train_epoch.py" in f
                               or "solution_train.py" in f or n == "one-file-solution"},
           **ALTERNATIVES}
CATALOGUES = (train_epoch, rnn_concise, sine_wave, gradient_flow)


@pytest.fixture(scope="module")
def reports(request, runner, tmp_path_factory):
    """Every submission this session's tests ask for, graded in one batch."""
    wanted = set(selected_ids(request))
    cases = {**{n: files for n, (files, _, _) in MISTAKES.items() if n in wanted},
             **{f"correct-{n}": f for n, f in CORRECT.items() if n in wanted}}
    return grade_many(runner, tmp_path_factory.mktemp("training-mistakes"), cases)


@pytest.mark.parametrize("name", list(MISTAKES))
def test_the_mistake_is_named_on_its_check(reports, name: str):
    _, carrier, key = MISTAKES[name]
    exercise = carrier.split(".")[0]
    report = report_of(reports, name)
    checks = checks_of(report, exercise)
    assert checks[carrier].status != "passed" and checks[carrier].points < checks[carrier].max_points, listed(checks)
    assert checks[carrier].misconception == key, listed(checks)
    assert not checks[carrier].same_cause_as, listed(checks)
    assert checks[carrier].message.startswith("Likely mistake: "), listed(checks)
    # the checks of other exercises keep their points; each cause of this one is told once, whole
    assert not [c for c in report.all_checks() if c.points < c.max_points and not c.check_id.startswith(exercise + ".")]
    failing = [c for c in checks.values() if c.status != "passed"]
    assert not [c.check_id for c in failing if "…" in c.message], listed(checks)
    messages = [c.message for c in failing if not c.same_cause_as]
    assert len(messages) == len(set(messages)), listed(checks)
    for check in failing:  # a check naming the same key says so by pointing at the carrier
        if check.misconception == key and check is not checks[carrier]:
            assert check.same_cause_as == carrier, listed(checks)


@pytest.mark.parametrize("name", list(CORRECT))
def test_a_correct_submission_is_told_no_misconception(reports, name: str):
    report = report_of(reports, f"correct-{name}")
    assert report.points == report.max_points, listed({c.check_id: c for c in report.all_checks()})
    assert not [c.check_id for c in report.all_checks() if c.misconception or c.same_cause_as]


def test_a_single_cause_is_carried_by_the_state_check():
    """A loop that never detaches fails every scratch check: the state check names it, the others point to it."""
    entries = {m.key: m for m in train_epoch.grader_misconceptions(None)}
    assert entries["train_epoch.state-not-detached"].checks[0] == "train_epoch.state.sequential"


def test_every_entry_is_whole_in_a_same_cause_line():
    for catalogue in CATALOGUES:
        for entry in catalogue.grader_misconceptions(None):
            assert len(entry.mistake) <= CAUSE_LIMIT, entry.key
            assert entry.why.endswith(".") and not entry.fix.endswith("."), entry.key


def test_params_of_a_module_is_named_from_the_error_in_rnn_concise():
    """An nn.Module model read as the scratch model (``.params``): the error's text names the mistake."""
    entries = {m.key: m for m in rnn_concise.grader_misconceptions(None)}
    error = "AttributeError: 'RNNModel' object has no attribute 'params' at rnn_concise.py:30 in begin_state"
    evidence = Evidence("rnn_concise.train", {"train": {"error": error}, "cpu": {}, "devices": {}}, {}, "error", "")
    claims = [key for key, entry in entries.items() if _claims(entry, evidence)]
    assert claims == ["rnn_concise.params-of-a-module"]


def _claims(entry, evidence) -> bool:
    try:
        return bool(entry.recognise(evidence))
    except Exception:  # noqa: BLE001 - as in the grader: no claim
        return False
