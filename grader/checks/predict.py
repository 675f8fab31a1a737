"""Checks for ``predict``: exact greedy text on a trained model, length and prefix, state carried, device.

The device check runs the student's loop on a stand-in model (``_DeviceNet``) that records where every
input it is fed lives. On ``meta`` (no data) its logits are ``_Shadowed`` tensors: meta tensors that carry
scripted values alongside, so ``int(y.argmax(...))``, ``.item()`` and ``.cpu()`` read what a GPU would give.
"""

from __future__ import annotations

import ast
import functools
import json
import re
from functools import lru_cache
from typing import Any, Optional

import torch
from torch.utils._pytree import tree_map

from grader import hookimpl
from grader.checks.reference_runs import default_setup, reference_training
from grader.corpus import corpus_spec, vocab_and_ids
from grader.definitions import Check, Probe
from grader.fixtures import first_of
from grader.hints import explain_error
from grader.plugins import reference_hooks
from grader.results import Verdict
from grader.training import make_net

EXERCISE = "predict"


def _cases(tokens: list[str]) -> list[list]:
    letters = [t for t in tokens if len(t) == 1 and t != " "]
    word = "".join(letters[:5])
    return [[f"{word} {letters[5]}", 20], [letters[1], 12], [f"{letters[2]}{letters[0]} ", 1], [word, 0]]


def trained_model(corpus: dict, secret: Optional[str] = None) -> dict:
    """Parameters and vocabulary of the reference model after the standard budget."""
    return _trained_model(repr(corpus), secret)


@lru_cache(maxsize=4)
def _trained_model(key: str, secret: Optional[str]) -> dict:
    corpus = ast.literal_eval(key)
    setup = default_setup(corpus, secret)
    run = reference_training(setup)
    vocab, _ = vocab_and_ids(corpus)
    return {
        "params": [p.tolist() for p in run["params"]],
        "tokens": list(vocab.idx_to_token),
        "num_hiddens": setup.num_hiddens,
    }


def build_model(model: dict, hooks: dict):
    """The trained model ``model`` describes, built with ``hooks`` (the reference's), and its vocabulary."""
    vocab, _ = vocab_and_ids({"tokens": model["tokens"], "ids": []})
    params = [torch.tensor(p, dtype=torch.float32).requires_grad_(True) for p in model["params"]]
    net = make_net(len(vocab), model["num_hiddens"], 0, hooks, params=params)
    return net, vocab


class _TracingNet:
    """Records every call's inputs and which state it started from."""

    def __init__(self, net):
        self.net, self.params = net, net.params
        self.calls: list[dict] = []
        self.begin_states = 0
        self._begun = None  # the latest state from begin_state
        self._last = None  # the state the previous call returned

    def begin_state(self, batch_size=1, device=None, **kwargs):
        self.begin_states += 1
        state = self.net.begin_state(batch_size=batch_size, device=device)
        self._begun = state[0].detach().clone() if isinstance(state[0], torch.Tensor) else None
        return state

    def __call__(self, X, state):
        def same(h, t):
            return isinstance(h, torch.Tensor) and t is not None and h.shape == t.shape and bool(torch.equal(h.detach(), t))

        h = first_of(state)
        tokens = X.detach().reshape(-1).tolist() if isinstance(X, torch.Tensor) else None
        expected = self._begun if not self.calls else self._last
        self.calls.append({"tokens": tokens, "shape": list(X.shape) if hasattr(X, "shape") else None,
                           "continued": same(h, expected), "fresh": same(h, self._begun)})
        outputs, new_state = self.net(X, state)
        final = first_of(new_state)
        self._last = final.detach().clone() if isinstance(final, torch.Tensor) else None
        return outputs, new_state


def probe_predict(ctx, model: dict, cases: list) -> Any:
    results = []
    for prefix, num_preds in cases:
        net, vocab = build_model(model, ctx.reference)
        traced = _TracingNet(net)
        text = ctx.student("predict")(prefix, num_preds, traced, vocab, torch.device("cpu"))
        results.append({
            "text": text if isinstance(text, str) else None,
            "kind": type(text).__name__,
            "calls": traced.calls[:200],
            "begin_states": traced.begin_states,
        })
    return results


@lru_cache(maxsize=8)
def _reference_texts(model_key: str, cases_key: str) -> list[str]:
    model, cases = json.loads(model_key), json.loads(cases_key)
    hooks = reference_hooks()
    texts = []
    for prefix, num_preds in cases:
        net, vocab = build_model(model, hooks)
        texts.append(hooks["predict"](prefix, num_preds, net, vocab, torch.device("cpu")))
    return texts


def reference_texts(model: dict, cases: list) -> list[str]:
    """The reference's greedy text for each ``[prefix, num_preds]`` case, computed once."""
    return _reference_texts(json.dumps(model), json.dumps(cases))


def _shown(text: str) -> str:
    """``text`` quoted, runs of spaces shown as ␣ (a terminal or a wrapped line would make them look like one)."""
    return re.sub(r" {2,}", lambda run: "␣" * len(run.group()), repr(text))


def judge_text(observed: Any, model: dict, cases: list) -> Verdict:
    texts = reference_texts(model, cases)
    for (prefix, num_preds), want, got in zip(cases, texts, observed):
        if got["text"] is None:
            return Verdict.failed(f"predict should return a string, but returned a {got['kind']}")
        if got["text"] == want:
            continue
        text = got["text"]
        # compared token by token, so a difference is never placed inside "<unk>"
        have, wanted = split_tokens(text, model["tokens"]), split_tokens(want, model["tokens"])
        at = next((i for i, (a, b) in enumerate(zip(have, wanted)) if a != b), min(len(have), len(wanted)))
        where = f"after {''.join(have[:at])!r}" if at else "at the very start"
        return Verdict.failed(
            f"for prefix {prefix!r} and {num_preds} predictions, expected {_shown(want)} but got {_shown(text)} "
            f"(first difference {where}); each new character is the argmax of the model's output "
            "for the previous character, with the state carried along",
            figures={"expected": want, "got": text})
    shown = "; ".join(f"{p!r} → {_shown(t)}" for (p, _), t in zip(cases, texts) if len(t) > len(p))
    return Verdict.passed(f"generated the reference's text for {len(cases)} prefixes", details=shown)


def judge_length(observed: Any, model: dict, cases: list) -> Verdict:
    for (prefix, num_preds), got in zip(cases, observed):
        text = got["text"]
        if text is None:
            return Verdict.failed(f"predict should return a string, but returned a {got['kind']}")
        if not text.startswith(prefix):
            return Verdict.failed(f"the returned text should start with the prefix {prefix!r}, but it is {_shown(text)}")
        # count tokens, not characters: a generated "<unk>" is one prediction
        generated = split_tokens(text[len(prefix):], model["tokens"])
        if len(generated) != num_preds:
            unk = " (each <unk> is one token)" if any(len(t) > 1 for t in generated) else ""
            return Verdict.failed(
                f"for prefix {prefix!r} (length {len(prefix)}) and num_preds={num_preds} the result should be the "
                f"prefix followed by {num_preds} predicted tokens, but {len(generated)} follow it{unk}: {_shown(text)}")
    return Verdict.passed("the prefix followed by exactly num_preds predicted tokens, also for num_preds = 0")


def judge_state(observed: Any, model: dict, cases: list) -> Verdict:
    tokens = model["tokens"]
    index = {t: i for i, t in enumerate(tokens)}
    for (prefix, num_preds), got in zip(cases, observed):
        calls = got["calls"]
        if got["begin_states"] < 1:
            return Verdict.failed("predict never called net.begin_state(batch_size=1, device=device) to get a fresh state")
        for k, call in enumerate(calls):
            if call["continued"]:
                continue
            if k == 0:
                return Verdict.failed(f"for prefix {prefix!r}, the first call to the model did not start from the state "
                                      "net.begin_state returned")
            if call["fresh"]:
                return Verdict.failed(
                    f"for prefix {prefix!r}, call {k + 1} to the model started again from the state net.begin_state "
                    "gives, not from the state the previous call returned; get a fresh state once, then pass each "
                    "returned state into the next call")
            return Verdict.failed(
                f"for prefix {prefix!r}, call {k + 1} to the model did not start from the state returned by the previous "
                "call; pass the state each call returns into the next call")
        fed = [t for call in calls for t in (call["tokens"] or [])]
        # what the student generated, read from the returned text where it shows it (as tokens: "<unk>" is one)
        text = got["text"] or ""
        generated = generated_tokens(text, prefix, num_preds, tokens)
        # feeding the last generated token too is harmless, so it may or may not be fed
        wanted = [index.get(t, 0) for t in list(prefix) + (generated or [])]
        seen = fed if generated is not None else fed[:len(prefix)]
        if seen != wanted[:len(seen)] or (num_preds and len(fed) < len(prefix) - 1):
            should = _decode(wanted[:max(len(prefix), len(wanted) - 1)], tokens)
            then = ("then each token it predicted, in turn (the last one need not be fed)" if generated is not None
                    else "then each token it predicted, in turn")
            return Verdict.failed(
                f"for prefix {prefix!r} the model was fed {_shown(_decode(fed, tokens))}, but it should be fed "
                f"{_shown(should)}: the prefix one character at a time, {then}")
    return Verdict.passed("warms up on the whole prefix and carries the state through every call")


#: what reads a tensor's values (or copies them out): on a ``_Shadowed`` tensor these read the scripted values
_READS = {torch.Tensor.item, torch.Tensor.tolist, torch.Tensor.numpy, torch.Tensor.cpu, torch.Tensor.__int__,
          torch.Tensor.__float__, torch.Tensor.__index__, torch.Tensor.__bool__, torch.Tensor.__repr__,
          torch.Tensor.__format__}


class _Shadowed(torch.Tensor):
    """A meta tensor with values: every op runs on the meta tensor (devices and shapes as on a GPU) and on a CPU
    shadow; reading values (``int``, ``.item()``, ``.tolist()``, ``.cpu()``, ``.to("cpu")``) reads the shadow."""

    @staticmethod
    def __new__(cls, real: torch.Tensor, shadow: torch.Tensor):
        tensor = torch.Tensor._make_subclass(cls, real)
        tensor._shadow = shadow
        return tensor

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}

        def real(a):
            return a.as_subclass(torch.Tensor) if isinstance(a, _Shadowed) else a

        def shadow(a):
            if isinstance(a, _Shadowed):
                return a._shadow
            if isinstance(a, torch.Tensor) and a.device.type == "meta":
                raise LookupError  # a meta tensor without values: nothing to shadow
            if isinstance(a, torch.device) and a.type == "meta" or isinstance(a, str) and a == "meta":
                return torch.device("cpu")
            return a

        with torch._C.DisableTorchFunctionSubclass():
            try:
                shadow_args, shadow_kwargs = tree_map(shadow, (args, kwargs))
            except LookupError:
                return func(*tree_map(real, args), **tree_map(real, kwargs))
            if func in _READS or func is torch.Tensor.to and _to_cpu(args[1:], kwargs):
                return func(*shadow_args, **shadow_kwargs)
            out = func(*tree_map(real, args), **tree_map(real, kwargs))
            try:
                values = func(*shadow_args, **shadow_kwargs)
            except Exception:  # noqa: BLE001 - what has no CPU counterpart stays a plain meta tensor
                return out

        def wrap(r, v):
            if isinstance(r, torch.Tensor) and r.device.type == "meta" and isinstance(v, torch.Tensor) \
                    and v.shape == r.shape:
                return _Shadowed(r, v)
            return r

        if isinstance(out, torch.Tensor):
            return wrap(out, values)
        if isinstance(out, tuple) and isinstance(values, tuple) and len(out) == len(values):
            parts = [wrap(r, v) for r, v in zip(out, values)]
            return type(out)(parts) if not hasattr(out, "_fields") else type(out)(*parts)
        return out


def _to_cpu(args: tuple, kwargs: dict) -> bool:
    def is_cpu(a):
        try:
            return isinstance(a, (str, torch.device)) and torch.device(a).type == "cpu"
        except RuntimeError:
            return False

    return any(is_cpu(a) for a in (*args, *kwargs.values()))


def _where(x: Any) -> str:
    if isinstance(x, torch.Tensor):
        return str(x.device)
    return f"a {type(x).__name__}, not a tensor"


class _DeviceNet:
    """A stand-in for the book's model: ``net(X, state) -> (Y, state)`` with ``Y`` of shape
    (X.numel(), vocab_size) on X's device, whose argmax follows a script; records the device of every input and
    every ``begin_state`` request. It never reads its inputs' values, so it runs on ``meta``."""

    def __init__(self, vocab_size: int, num_hiddens: int):
        self.vocab_size, self.num_hiddens = vocab_size, num_hiddens
        self.params: list = []
        self.inputs: list[str] = []
        self.states: list[str] = []

    def begin_state(self, batch_size=1, device=None, **kwargs):
        self.states.append(str(torch.device(device)) if device is not None else "no device")
        return (torch.zeros((batch_size, self.num_hiddens), device=device),)

    def __call__(self, X, state):
        self.inputs.append(_where(X))
        rows = X.numel() if isinstance(X, torch.Tensor) else 1
        picks = [1 + (7 * len(self.inputs) + 3 * r) % (self.vocab_size - 1) for r in range(rows)]
        logits = torch.zeros((rows, self.vocab_size))
        logits[torch.arange(rows), torch.tensor(picks)] = 1.0
        device = X.device if isinstance(X, torch.Tensor) else torch.device("cpu")
        if device.type == "meta":
            return _Shadowed(torch.empty((rows, self.vocab_size), device="meta"), logits), state
        return logits.to(device), state


def probe_predict_device(ctx, tokens: list, case: list, num_hiddens: int, devices: list) -> Any:
    vocab, _ = vocab_and_ids({"tokens": tokens, "ids": []})
    prefix, num_preds = case

    def run(device: str) -> dict:
        net = _DeviceNet(len(vocab), num_hiddens)
        text = ctx.student("predict")(prefix, num_preds, net, vocab, torch.device(device))
        return {"inputs": net.inputs[:200], "states": net.states[:20], "kind": type(text).__name__}

    return {device: ctx.attempt(lambda device=device: run(device)) for device in devices}


def judge_device(observed: Any, tokens: list, case: list, num_hiddens: int, devices: list, *, device: str) -> Verdict:
    run = observed[device]
    if "error" in run:
        hint = (f"with device={device} it must create every tensor it feeds the model with device=device "
                "(reading the model's output with int() or .item() is fine)")
        return Verdict.failed(explain_error("predict", run["error"], hint=hint))
    wrong = [s for s in run["states"] if not _on(s, device)]
    if wrong:
        return Verdict.failed(f"predict asked net.begin_state for a state on {wrong[0]} while device was {device}: "
                              "call net.begin_state(batch_size=1, device=device)")
    if not run["inputs"]:
        return Verdict.failed(f"predict never called the model when device was {device}")
    for k, where in enumerate(run["inputs"]):
        if where.startswith("a "):
            return Verdict.failed(f"predict fed the model {where} (call {k + 1}): create the input tensor with "
                                  "torch.tensor(..., device=device)")
        if not _on(where, device):
            return Verdict.failed(f"predict fed the model an input on {where} while device was {device} "
                                  f"(call {k + 1}): create the input tensor with device=device")
    return Verdict.passed(f"all {len(run['inputs'])} inputs fed to the model were on {device}")


def _on(where: str, device: str) -> bool:
    """Whether a recorded device is ``device`` ("cuda:0" is on "cuda")."""
    return where == device or ":" not in device and where.split(":")[0] == device


def split_tokens(text: str, tokens: list[str]) -> list[str]:
    """``text`` cut into the vocabulary's tokens, longest first: ``<unk>`` is one token, not five characters
    (a character the vocabulary lacks is a token of its own)."""
    longer = sorted((t for t in tokens if len(t) > 1), key=len, reverse=True)
    found, i = [], 0
    while i < len(text):
        token = next((t for t in longer if text.startswith(t, i)), text[i])
        found.append(token)
        i += len(token)
    return found


def generated_tokens(text: str, prefix: str, num_preds: int, tokens: list[str]) -> Optional[list[str]]:
    """The tokens ``predict`` generated, read from its returned text: after the prefix, or the whole text when it
    has exactly ``num_preds`` tokens (the prefix left out); None when the text shows neither."""
    if text.startswith(prefix):
        return split_tokens(text[len(prefix):], tokens)
    whole = split_tokens(text, tokens)
    return whole if len(whole) == num_preds else None


def _decode(ids: list, tokens: list[str]) -> str:
    return "".join(tokens[i] if 0 <= i < len(tokens) else "?" for i in ids)


@hookimpl
def grader_checks(config):
    # the reference model is the input here: the student's predict generates from it
    model = trained_model(corpus_spec(config), config.secret)
    cases = _cases(model["tokens"])
    run = Probe("predict", probe_predict, dict(model=model, cases=cases),
                reference=functools.partial(reference_texts, model, cases))
    on_devices = Probe("predict", probe_predict_device,
                       dict(tokens=model["tokens"], case=cases[0], num_hiddens=model["num_hiddens"],
                            devices=list(config.devices)))
    checks = [
        Check(EXERCISE, "text", "generates the reference's greedy text on a trained model", 4, run, judge_text),
        Check(EXERCISE, "length", "returns the prefix plus exactly num_preds characters", 2, run, judge_length),
        Check(EXERCISE, "state", "feeds the prefix and carries the state from call to call", 3, run, judge_state),
    ]
    for device in config.devices:
        checks.append(Check(EXERCISE, f"device.{device}", f"feeds the model inputs on the device it is given ({device})",
                            1 / len(config.devices), on_devices, functools.partial(judge_device, device=device)))
    return checks
