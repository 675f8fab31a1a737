"""Hook specifications: the student contract and the harness's own extension points.

Two kinds of hook live here.

*Exercise hooks* are what a student implements, one function each, marked with
``@grader.hookimpl``. Each returns one value and is ``firstresult``. The grader does not
call them through a plugin manager: the runner's loader imports each file of a
submission, collects the marked functions by name (checking their arity against these
specs) and hands exactly one of them to each probe, the reference
(:func:`grader.plugins.reference_hooks`) supplying the others. Which exercise each hook
belongs to is in :mod:`grader.registry`.

*Harness hooks* (prefixed ``grader_``) let built-in and third-party plugins add
exercises, checks and reporters; all implementations are called and their results
joined. Third-party plugins are found through the ``rnn_grader`` entry-point group.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence

from grader import hookspec

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from torch import nn

    from grader.config import RunConfig
    from grader.definitions import Check, Exercise, Misconception
    from grader.results import GradingReport


# --------------------------------------------------------------------------
# Exercise hooks: rnn_scratch
# --------------------------------------------------------------------------


@hookspec(firstresult=True)
def get_params(vocab_size: int, num_hiddens: int, device: "torch.device") -> "list[torch.Tensor]":
    """Create the parameters of the scratch RNN language model.

    :param vocab_size: V, the number of tokens (inputs and outputs are one-hot of size V).
    :param num_hiddens: H, the size of the hidden state.
    :param device: where every tensor must be created.
    :return: ``[W_xh (V, H), W_hh (H, H), b_h (H,), W_hq (H, V), b_q (V,)]``, float32,
        on ``device``, each with ``requires_grad``; weights drawn from N(0, 0.01²),
        biases zero.
    """


@hookspec(firstresult=True)
def init_rnn_state(batch_size: int, num_hiddens: int, device: "torch.device") -> "tuple[torch.Tensor]":
    """Create the initial hidden state.

    :param batch_size: B.
    :param num_hiddens: H.
    :param device: where the state must be created.
    :return: a one-element tuple ``(zeros(B, H),)``, float32, on ``device``.
    """


@hookspec(firstresult=True)
def rnn(
    inputs: "torch.Tensor", state: "tuple[torch.Tensor]", params: "Sequence[torch.Tensor]"
) -> "tuple[torch.Tensor, tuple[torch.Tensor]]":
    """Run the recurrence over a minibatch of one-hot sequences.

    ``H_t = tanh(X_t W_xh + H_{t-1} W_hh + b_h)`` and ``O_t = H_t W_hq + b_q``.

    :param inputs: one-hot inputs of shape (T, B, V), time-major.
    :param state: ``(H_0,)`` with H_0 of shape (B, H).
    :param params: ``[W_xh, W_hh, b_h, W_hq, b_q]`` as returned by :func:`get_params`.
    :return: ``(outputs, (H_T,))`` with outputs of shape (T*B, V), time step by time step.
    """


# --------------------------------------------------------------------------
# Exercise hooks: grad_clipping, predict, train_epoch
# --------------------------------------------------------------------------


@hookspec(firstresult=True)
def grad_clipping(net: Any, theta: float) -> "float | torch.Tensor | None":
    """Rescale all gradients in place so that their joint L2 norm is at most ``theta``.

    :param net: an ``nn.Module``, or a scratch model whose ``.params`` lists its parameters.
    :param theta: the largest joint norm allowed; gradients already within it are left alone.
    :return: None or the norm before clipping (the return value is not graded).
    """


@hookspec(firstresult=True)
def predict(prefix: str, num_preds: int, net: Any, vocab: Any, device: "torch.device") -> str:
    """Generate text greedily after warming the state up on ``prefix``.

    :param prefix: the text to start from (at least one character).
    :param num_preds: how many characters to generate, each the argmax of the model's output.
    :param net: a model called as ``net(X, state)`` with X of shape (1, T), returning
        ``(outputs, state)``; ``net.begin_state(batch_size=1, device=device)`` gives a fresh state.
    :param vocab: maps tokens to indices (``vocab[token]``) and back (``vocab.idx_to_token``).
    :param device: where input tensors must be created.
    :return: ``prefix`` followed by the ``num_preds`` generated characters.
    """


@hookspec(firstresult=True)
def train_epoch(
    net: Any,
    train_iter: Any,
    loss: "nn.Module",
    updater: Any,
    device: "torch.device",
    use_random_iter: bool,
) -> "tuple[float, float]":
    """Train ``net`` for one epoch of truncated back-propagation through time.

    A fresh state is created at the first minibatch, and at every minibatch when
    ``use_random_iter`` is true; otherwise the state is carried over, detached.
    Labels are ``Y.T.reshape(-1)``; gradients are clipped to norm 1 before each update.

    :param net: the model (scratch or ``nn.Module``).
    :param train_iter: yields ``(X, Y)`` pairs of shape (B, T), int64.
    :param loss: a loss such as ``nn.CrossEntropyLoss()`` returning the mean over tokens.
    :param updater: a ``torch.optim.Optimizer``, or a callable ``updater(batch_size=1)``
        that applies one update and zeroes the gradients.
    :param device: where minibatches must be moved.
    :param use_random_iter: whether ``train_iter`` samples minibatches at random.
    :return: ``(perplexity, tokens_per_second)`` over the epoch.
    """


# --------------------------------------------------------------------------
# Exercise hooks: rnn_concise, sine_wave, gradient_flow
# --------------------------------------------------------------------------


@hookspec(firstresult=True)
def rnn_model(rnn_layer: "nn.Module", vocab_size: int) -> "nn.Module":
    """Build the concise language model around a recurrent layer: one-hot inputs, the layer, a linear output.

    The returned model must use ``rnn_layer`` itself (not a copy) and hold exactly one
    ``nn.Linear(num_directions * num_hiddens, vocab_size)`` as a registered submodule: the grader
    finds the two and sets their weights to compare outputs with the scratch model.

    :param rnn_layer: an ``nn.RNN``, ``nn.GRU`` or ``nn.LSTM`` with ``input_size = vocab_size``,
        time-major (``batch_first=False``), possibly with several layers or bidirectional.
    :param vocab_size: V, the number of tokens.
    :return: an ``nn.Module`` whose ``forward(inputs, state)`` takes token indices of shape (B, T),
        int64, and returns ``(outputs, state)`` with outputs of shape (T*B, V), time step by time
        step, and whose ``begin_state(device, batch_size=1)`` returns zeros of shape
        (num_directions * num_layers, B, H) on ``device``, or a tuple of two such tensors for an LSTM.
    """


@hookspec(firstresult=True)
def sine_model(input_dim: int, hidden_dim: int, out_dim: int) -> "nn.Module":
    """Build the one-step-ahead sine-wave regressor: an ``nn.RNN`` followed by a linear read-out.

    :param input_dim: features per time step of the input.
    :param hidden_dim: H, the size of the hidden state.
    :param out_dim: features per time step of the prediction.
    :return: an ``nn.Module`` whose ``forward(x, h0)`` takes ``x`` of shape (B, T, input_dim),
        batch first, and ``h0`` of shape (1, B, H), and returns ``(y, h)`` with ``y`` of shape
        (B, T, out_dim), one prediction per time step, and ``h`` the final state (1, B, H).
    """


@hookspec(firstresult=True)
def state_jacobian(h_next: "torch.Tensor", W_hh: "torch.Tensor") -> "torch.Tensor":
    """The Jacobian of one recurrent step with respect to the previous state.

    With row vectors, ``h_next = tanh(x W_xh + h W_hh + b)``; its Jacobian with respect to ``h``
    has entries ``J[j, i] = d h_next[j] / d h[i] = (1 - h_next[j]²) W_hh[i, j]``, that is
    ``diag(1 - h_next²) @ W_hh.T`` (rows index the output, as ``torch.autograd.functional.jacobian``
    lays it out).

    :param h_next: the new state h_{t+1}, shape (H,).
    :param W_hh: the hidden-to-hidden weights, shape (H, H).
    :return: J of shape (H, H), on the inputs' device, float32.
    """


# --------------------------------------------------------------------------
# Harness hooks
# --------------------------------------------------------------------------


@hookspec
def grader_exercises() -> "Sequence[Exercise]":
    """Describe exercises this plugin grades.

    :return: exercises (name, title, hooks, summary); all plugins' lists are joined, in the order plugins are called.
    """


@hookspec
def grader_checks(config: "RunConfig") -> "Sequence[Check]":
    """Contribute checks.

    Checks that read the same run of student code share one :class:`~grader.definitions.Probe`
    object; the reference's side of each probe is computed by its ``reference`` callable when
    grading is planned, not here.

    :param config: the run's settings (corpus, devices, whether hidden checks run).
    :return: checks; all plugins' lists are joined and run in exercise order.
    """


@hookspec
def grader_misconceptions(config: "RunConfig") -> "Sequence[Misconception]":
    """Contribute recognisable mistakes (a misconception catalogue) for checks of any plugin.

    When a check does not pass, the misconceptions naming it are tried in order (built-in ones
    first, then installed packs, then ``--plugins`` folders) and the first that recognises the
    run's data replaces the check's message with its diagnosis; the check's own message is kept
    as what it saw. Nothing is said when none matches, and passing checks are never diagnosed.

    :param config: the run's settings.
    :return: misconceptions; all plugins' lists are joined.
    """


@hookspec
def grader_report(report: "GradingReport", config: "RunConfig") -> None:
    """Present a finished grading (terminal, HTML, JSON, ...). Called on every reporter.

    :param report: the complete, plain-data result.
    :param config: the run's settings, including the output folder if any.
    """
