"""How shapes and errors are told: axes named, torch's errors translated, the grader's own errors not the student's."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from grader.compare import UnexpectedForm, check_allclose, check_tensor_meta
from grader.definitions import Check, Probe
from grader.hints import GRADER_OWN, Hint, explain_error, quote
from grader.judge.verdicts import Decoded, verdict_for
from grader.results import ERROR
from grader.wire import TensorData

from conftest import mutate


def tensor(*shape: int, dtype: str = "float32") -> TensorData:
    return TensorData(dtype, shape, "cpu", False, True, False, np.zeros(shape, dtype=dtype))


# ------------------------------------------------------------------ shapes name their axes

STATE_AXES = ("num_directions * num_layers", "batch_size", "num_hiddens")


def test_a_wrong_shape_names_every_axis_and_the_one_that_is_off():
    message = check_tensor_meta("the state", (2, 5, 16), tensor(4, 5, 16), axes=STATE_AXES)
    assert message == ("the state has shape (4, 5, 16) but should be (num_directions * num_layers = 2, batch_size = 5, "
                       "num_hiddens = 16): num_directions * num_layers is 4, not 2")


def test_axes_in_another_order_are_told_as_such():
    message = check_tensor_meta("H", (5, 48), tensor(48, 5), axes=("batch_size", "num_hiddens"))
    assert message.endswith("its axes are in the order (num_hiddens, batch_size)")


def test_a_missing_or_extra_axis_of_size_one_is_named():
    axes = ("num_layers", "batch", "hidden_dim")
    missing = check_tensor_meta("h", (1, 3, 12), tensor(3, 12), axes=axes)
    assert missing.endswith("the num_layers axis (of size 1) is missing")
    assert "extra axis of size 1" in check_tensor_meta("h", (3, 12), tensor(1, 3, 12), axes=axes[1:])


def test_without_axis_names_the_old_words_stay():
    assert check_tensor_meta("y", (3, 7), tensor(7, 3)) == "y has shape (7, 3), expected (3, 7)"
    assert check_tensor_meta("y", (3, 7), tensor(3, 7)) is None


def test_allclose_names_the_axes_of_a_wrong_shape():
    ref = np.zeros((5, 16), dtype=np.float32)
    message = check_allclose("H", ref, tensor(16, 5), 1e-5, 1e-5, ("batch row", "hidden unit"))
    assert "(batch row = 5, hidden unit = 16)" in message
    # with index_of, axes describe the mapped index: the shape is named by shape_axes only
    message = check_allclose("out", ref, tensor(4, 16), 1e-5, 1e-5, ("t", "b", "v"), lambda ix: ix,
                             shape_axes=("steps * batch", "vocab"))
    assert "(steps * batch = 5, vocab = 16)" in message


def test_no_two_axes_of_a_checked_shape_are_equal_in_the_published_sizes():
    """A message like "(4, 4, 16)" could not show which axis is wrong."""
    from grader.checks import rnn_concise, rnn_scratch, sine_wave

    c = rnn_scratch.CASE
    shapes = {"rnn outputs": (c["num_steps"] * c["batch_size"], c["vocab_size"]),
              "rnn outputs stacked": (c["num_steps"], c["batch_size"], c["vocab_size"]),
              "rnn state": (c["batch_size"], c["num_hiddens"]), "init_rnn_state": (5, rnn_scratch.H),
              "W_xh": (rnn_scratch.V, 256)}
    for name, case in (("layers", rnn_concise.LAYER_CASE), ("device", dict(rnn_concise.LAYER_CASE, num_steps=3))):
        T, B, V, H = case["num_steps"], case["batch_size"], case["vocab_size"], case["num_hiddens"]
        shapes[f"concise {name} outputs"] = (T * B, V)
        for layer, spec in rnn_concise.LAYERS.items():
            rows = (2 if spec["bidirectional"] else 1) * spec["num_layers"]
            shapes[f"concise {name} {layer} state"] = (rows, B, H)
            shapes[f"concise {name} {layer} sequence"] = (T, B, (2 if spec["bidirectional"] else 1) * H)
    s = rnn_concise.SCRATCH
    shapes["concise scratch state"] = (1, s["batch_size"], s["num_hiddens"])
    shapes["concise scratch outputs"] = (s["num_steps"] * s["batch_size"], s["vocab_size"])
    f = sine_wave.FORWARD
    shapes["sine y"] = (f["batch"], f["steps"], f["out_dim"])
    shapes["sine h"] = (1, f["batch"], f["hidden_dim"])
    shapes["sine x"] = (f["batch"], f["steps"], f["input_dim"])
    equal = {name: shape for name, shape in shapes.items() if len(set(shape)) != len(shape)}
    assert not equal, equal


# ------------------------------------------------------------------ torch's errors, translated

BACKWARD_TWICE = ("RuntimeError: Trying to backward through the graph a second time (or directly access saved tensors "
                  "after they have already been freed). Saved intermediate values of the graph are freed when you call "
                  ".backward() or autograd.grad(). Specify retain_graph=True if you need to backward through the graph "
                  "a second time or if you need to access saved tensors after calling backward. "
                  "at train_epoch.py:30 in train_epoch: l.backward()")


def test_the_hint_comes_before_the_quoted_error_and_torchs_wrong_advice_is_left_out():
    message = explain_error("train_epoch", BACKWARD_TWICE)
    assert message.startswith("train_epoch raised an error: ")
    assert message.index("detach") < message.index("torch said") < message.index("Trying to backward")
    assert "retain_graph" not in message
    assert message.endswith("(at train_epoch.py:30 in train_epoch: l.backward())")


def real_error(code: str, folder: Path) -> str:
    """The runner's description of what ``code`` raises, run as a student's file in ``folder``."""
    from grader.runner.tracebacks import describe_exception

    path = folder / "student.py"
    path.write_text(code)
    namespace: dict = {}
    try:
        exec(compile(code, str(path), "exec"), namespace)
    except Exception as exc:  # noqa: BLE001 - the error is the point
        return describe_exception(exc, folder)
    raise AssertionError("the code did not raise")


def test_a_loop_detaching_the_rows_of_a_single_tensor_state_is_explained(tmp_path):
    error = real_error("import torch\nstate = torch.zeros(1, 4, 8, requires_grad=True) * 2\n"
                       "for s in state:\n    s.detach_()\n", tmp_path)
    message = explain_error("train_epoch", error)
    assert "view" in message and "state.detach_()" in message
    assert message.index("view") < message.index("torch said")
    quoted = message[message.index("torch said"):]
    assert "Can't detach views in-place." in quoted
    assert "DistributedDataParallel" not in quoted and "Use detach() instead" not in quoted
    assert "student.py:4" in message


def test_an_nn_module_without_params_gets_net_parameters(tmp_path):
    error = real_error("from torch import nn\nnet = nn.Linear(2, 3)\nparams = net.params\n", tmp_path)
    message = explain_error("grad_clipping", error)
    assert "net.parameters()" in message and "Python said (AttributeError)" in message


@pytest.mark.parametrize("code, words", [
    # nn.RNN built with the hidden size where the input size belongs
    ("import torch\nfrom torch import nn\nrnn = nn.RNN(12, 12, batch_first=True)\nrnn(torch.zeros(3, 7, 2))\n",
     ("first argument of nn.RNN(input_size", "input_dim")),
    # a (T, B, V) output given to the loss without reshaping it to (T * B, V)
    ("import torch\nfrom torch import nn\nnn.CrossEntropyLoss()(torch.zeros(16, 16, 28), torch.zeros(256).long())\n",
     ("(num_steps * batch_size, vocab_size)", "(T * B, H) before the linear layer")),
    # the perplexity of the summed loss, math.exp(total_loss) / total_tokens
    ("import math\ntotal_loss, total_tokens = 5000.0, 1536\nmath.exp(total_loss) / total_tokens\n",
     ("MEAN loss per token", "math.exp(total_loss / total_tokens)")),
])
def test_a_raw_error_of_a_common_mistake_says_the_fix_in_plain_words(tmp_path, code, words):
    message = explain_error("train_epoch", real_error(code, tmp_path))
    said = message.index(" said (")
    assert all(0 < message.index(w) < said for w in words), message  # the plain words come before the quote
    assert "Python said (OverflowError)" in message or "OverflowError" not in message


def test_a_matrix_shape_error_names_both_matrices_with_the_probes_sizes():
    error = ("RuntimeError: mat1 and mat2 shapes cannot be multiplied (48x48 and 4x48) at rnn_scratch.py:9 "
             "in rnn: H = torch.tanh(X @ W_xh + W_hh @ H + b_h)")
    hints = (Hint(r"mat1 and mat2", "check the matrix orientation: H (B, H) @ W_hh (H, H)"),)
    message = explain_error("rnn", error, hints, sizes=dict(vocab_size=28, num_hiddens=48, batch_size=4, seed=7))
    assert "the left matrix is (hidden = 48, hidden = 48) and the right one (batch = 4, hidden = 48)" in message
    assert message.index("orientation") < message.index("torch said")


def test_an_error_without_a_known_meaning_is_quoted_as_before():
    error = "RuntimeError: broken on purpose at g.py:3 in grad_clipping: raise X"
    assert explain_error("grad_clipping", error) == \
        "grad_clipping raised RuntimeError: broken on purpose (at g.py:3 in grad_clipping: raise X)"


IN_PLACE = ("one of the variables needed for gradient computation has been modified by an inplace operation: "
            "[torch.FloatTensor [4, 48]], which is output 0 of TanhBackward0, is at version 1; expected version 0 "
            "instead. Hint: enable anomaly detection with torch.autograd.set_detect_anomaly(True).")


def test_a_quote_keeps_its_first_sentence_whole_and_leaves_torchs_advice_out():
    assert quote(IN_PLACE) == IN_PLACE[:IN_PLACE.index(" Hint:")]
    two = "Expected all tensors to be on the same device. Found cpu and meta. Use .to(device) on each."
    assert quote(two) == two
    assert quote(two, advice=False) == "Expected all tensors to be on the same device. Found cpu and meta."


@pytest.mark.parametrize("limit", [20, 40, 60])
def test_a_very_long_first_sentence_is_cut_at_a_word(limit):
    cut = quote(IN_PLACE, limit=limit)
    assert len(cut) <= 2 * limit and cut.endswith("…") and "anomaly" not in cut
    words = set(IN_PLACE.split())
    assert all(word in words for word in cut.rstrip("…").split()), cut


# ------------------------------------------------------------------ the grader's own errors are not the student's


def _probe_run(ctx, n):  # never run here
    return n


def make_check(judge, title: str = "rnn returns (T*B, V) outputs") -> Check:
    return Check("rnn_scratch", "odd", title, 1.0, Probe("rnn", _probe_run, {"n": 1}), judge)


def test_an_error_raised_by_the_grader_code_in_the_runner_is_not_said_to_be_raised_by_the_hook():
    error = GRADER_OWN + ("RuntimeError: The size of tensor a (4) must match the size of tensor b (140) at "
                          "non-singleton dimension 1")
    verdict = verdict_for(make_check(lambda observed, n: None), Decoded({"error": error}))
    assert verdict.status == ERROR
    assert "rnn raised" not in verdict.message and "not raised by your code" in verdict.message
    assert "could not use what rnn returned" in verdict.message


def test_a_judge_that_knows_the_expected_form_says_it():
    def judge(observed, n):
        raise UnexpectedForm("a dict with the outputs and the state", "a list")

    verdict = verdict_for(make_check(judge), Decoded({"value": [1]}))
    assert verdict.message == ("rnn returned data of an unexpected form: expected a dict with the outputs and the "
                               "state, got a list")


def test_a_broadcast_error_in_a_judge_is_the_checks_own_and_says_what_the_check_tests():
    def judge(observed, n):
        return observed.array + np.zeros((2, 5))  # a comparison the judge got wrong

    verdict = verdict_for(make_check(judge), Decoded({"value": tensor(4, 3)}))
    assert verdict.status == ERROR and "rnn raised" not in verdict.message
    assert "the check's own code stopped with ValueError" in verdict.message
    assert "what it tests: rnn returns (T*B, V) outputs" in verdict.message


GRADER_CODE = "<check pack messages>"  # how the runner names a pack's probe: the grader's own code


def grader_run(source: str, folder: Path, **names) -> str:
    """What ``probe(**names)``, compiled as the grader's own code, raises, as the runner describes it."""
    from grader.runner.tracebacks import describe_exception

    namespace: dict = {}
    exec(compile(source, GRADER_CODE, "exec"), namespace)
    try:
        namespace["probe"](**names)
    except Exception as exc:  # noqa: BLE001 - the error is the point
        return describe_exception(exc, folder)
    raise AssertionError("the probe did not raise")


def test_the_runner_marks_only_errors_raised_by_the_grader_itself(tmp_path):
    import torch

    # a broadcast in the grader's probe, on outputs of the wrong shape: the grader's
    error = grader_run("import torch\ndef probe(out):\n    return (out * torch.ones(140, 28)).sum()\n", tmp_path,
                       out=torch.zeros(35, 4, 28))
    assert error.startswith(GRADER_OWN)
    # an nn.Module the student returned, called by the probe: the student's model raised
    error = grader_run("import torch\ndef probe(model):\n    return model(torch.zeros(3, 5))\n", tmp_path,
                       model=torch.nn.Linear(4, 2))
    assert not error.startswith(GRADER_OWN) and "mat1 and mat2" in error
    # backward through a graph the student's code built and already freed: the student's graph
    w = torch.ones(3, requires_grad=True)
    y = torch.tanh(w * 2).sum()
    y.backward()
    error = grader_run("def probe(y):\n    y.backward()\n", tmp_path, y=y)
    assert not error.startswith(GRADER_OWN) and "second time" in error
    # an error in the submission's own code is the submission's
    assert not real_error("import torch\ntorch.zeros(2) @ torch.zeros(3)\n", tmp_path).startswith(GRADER_OWN)


# ------------------------------------------------------------------ in a grading


@pytest.fixture(scope="module")
def scratch(runner):
    """``scratch(folder) -> GradingReport`` with the checks of rnn_scratch only."""
    from grader.config import RunConfig
    from grader.judge import engine
    from grader.plugins import get_plugin_manager

    pm, config = get_plugin_manager(), RunConfig()
    full = engine.plan(pm, config)
    the_plan = engine.Plan([e for e in full.exercises if e.name == "rnn_scratch"],
                           [c for c in full.checks if c.exercise == "rnn_scratch"])
    return lambda folder: engine.grade(folder, config, pm, runner, the_plan)


def checks_of(report) -> dict:
    return {c.check_id: c for c in report.all_checks()}


def test_stacked_outputs_are_never_reported_as_an_error_raised_by_rnn(scratch, submission):
    report = scratch(submission(mutate("rnn_scratch.py", "torch.cat(outputs, dim=0)", "torch.stack(outputs)")))
    gradients = checks_of(report)["rnn_scratch.rnn.gradients"]
    assert gradients.status == "failed", gradients.message
    seen = gradients.message + gradients.details
    assert "raised" not in seen and "size of tensor" not in seen
    shapes = checks_of(report)["rnn_scratch.rnn.shapes"]
    assert "(num_steps = 35, batch_size = 4, vocab_size = 28)" in shapes.message + shapes.details


def test_parameters_in_another_order_are_told_as_an_order(scratch, submission):
    report = scratch(submission(mutate("rnn_scratch.py", "params = [W_xh, W_hh, b_h, W_hq, b_q]",
                                       "params = [W_xh, W_hh, W_hq, b_h, b_q]")))
    shapes = checks_of(report)["rnn_scratch.params.shapes"]
    text = shapes.message + shapes.details
    assert "in the order [W_xh, W_hh, W_hq, b_h, b_q]" in text and "b_h has shape" not in text


def test_a_matrix_orientation_error_comes_translated(scratch, submission):
    report = scratch(submission(mutate("rnn_scratch.py", "torch.mm(H, W_hh)", "torch.mm(W_hh, H)")))
    check = checks_of(report)["rnn_scratch.rnn.shapes"]
    text = check.message + " " + check.details
    assert "(hidden = 48, hidden = 48)" in text and "(batch = 4, hidden = 48)" in text
    assert text.index("orientation") < text.index("torch said")
