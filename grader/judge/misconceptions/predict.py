"""Mistakes in ``predict``, recognised from the text it returned and the calls the traced model saw.

The checks hand the student's ``predict`` the reference's trained model; here the judge builds the
same model and re-runs greedy prediction with one mistake applied (a prediction never appended, a
fresh state, argmin, one prediction too few...) on the same prefixes. A mistake is recognised when
the student's texts equal the mistaken ones for every prefix and differ from the right ones. Where
two mistakes give the same text, the calls the model saw tell them apart (was the prefix fed?).
Sampling cannot be re-run; it is recognised by its signature: a text fed back consistently, with the
state carried, that is not the argmax but is made of tokens the model finds likely.
"""

from __future__ import annotations

import json
import re
from functools import lru_cache
from typing import Callable, Optional

import torch

from grader import hookimpl
from grader.checks.predict import build_model, generated_tokens, reference_texts
from grader.definitions import Evidence, Misconception
from grader.plugins import reference_hooks

TEXT, LENGTH, STATE = "predict.text", "predict.length", "predict.state"


def _mistaken_predict(prefix: str, num_preds: int, net, vocab, mistake: str) -> str:
    """The book's greedy ``predict`` with ``mistake`` applied ("" for none)."""
    def step(token: int, state):
        return net(torch.tensor([[token]]), state)

    state = net.begin_state(batch_size=1, device=torch.device("cpu"))
    if mistake == "skips-prefix":
        outputs = [vocab[ch] for ch in prefix]
    else:
        outputs = [vocab[prefix[0]]]
        for ch in (prefix if mistake == "prefix-not-sliced" else prefix[1:]):
            y, new_state = step(outputs[-1], state)
            if mistake != "reset-all":
                state = new_state
            outputs.append(int(y.argmax(dim=1).reshape(1)) if mistake == "warm-up-outputs" else vocab[ch])
    if mistake == "fresh-after-warm-up":
        state = net.begin_state(batch_size=1, device=torch.device("cpu"))
    count = {"one-too-few": max(num_preds - 1, 0), "one-too-many": num_preds + 1}.get(mistake, num_preds)
    generated = []
    for _ in range(count):
        if mistake == "reset-each-step":
            state = net.begin_state(batch_size=1, device=torch.device("cpu"))
        y, new_state = step(vocab[prefix[-1]] if mistake == "feeds-last-prefix" else outputs[-1], state)
        if mistake != "reset-all":
            state = new_state
        token = int((y.argmin if mistake == "argmin" else y.argmax)(dim=1).reshape(1))
        generated.append(token)
        if mistake != "never-appended":
            outputs.append(token)
    if mistake == "only-generated":
        outputs = outputs[len(prefix):]
    return "".join(vocab.idx_to_token[i] for i in outputs)


@lru_cache(maxsize=32)
def _mistaken_texts(model_key: str, cases_key: str, mistake: str) -> tuple[str, ...]:
    model, cases = json.loads(model_key), json.loads(cases_key)
    hooks = reference_hooks()
    texts = []
    with torch.no_grad():
        for prefix, num_preds in cases:
            net, vocab = build_model(model, hooks)
            texts.append(_mistaken_predict(prefix, num_preds, net, vocab, mistake))
    return tuple(texts)


def mistaken_texts(model: dict, cases: list, mistake: str) -> tuple[str, ...]:
    """What ``predict`` with ``mistake`` returns for each ``[prefix, num_preds]`` case, computed once."""
    return _mistaken_texts(json.dumps(model), json.dumps(cases), mistake)


def _runs(evidence: Evidence) -> Optional[list[dict]]:
    """The probe's per-case records, when every case returned a string."""
    observed, cases = evidence.observed, evidence.params["cases"]
    if not isinstance(observed, list) or len(observed) != len(cases):
        return None
    if not all(isinstance(run, dict) and isinstance(run.get("text"), str) for run in observed):
        return None
    return observed


def _returns_as(*mistakes: str) -> Callable[[Evidence], bool]:
    """Every case's text is what one of ``mistakes`` returns, and that text is wrong for some case."""
    def recognise(evidence: Evidence) -> bool:
        runs = _runs(evidence)
        if runs is None:
            return False
        model, cases = evidence.params["model"], evidence.params["cases"]
        texts = [run["text"] for run in runs]
        correct = list(reference_texts(model, cases))
        for mistake in mistakes:
            wrong = list(mistaken_texts(model, cases, mistake))
            if wrong != correct and texts == wrong:
                return True
        return False
    return recognise


def _fed(run: dict) -> list:
    return [t for call in run.get("calls") or [] for t in (call.get("tokens") or [])]


def _prefix_fed(evidence: Evidence) -> list[bool]:
    """Per case with a prefix longer than one character: whether the model was fed the prefix before predicting."""
    index = {t: i for i, t in enumerate(evidence.params["model"]["tokens"])}
    found = []
    for (prefix, num_preds), run in zip(evidence.params["cases"], evidence.observed):
        if len(prefix) > 1 and num_preds:
            want = [index.get(ch, 0) for ch in prefix[:-1]]
            found.append(_fed(run)[:len(want)] == want)
    return found


def _fed_first(feed: Callable[[list, int], list]) -> Callable[[Evidence], bool]:
    """Per case with a longer prefix and predictions, the model's inputs began with ``feed(prefix ids, num_preds)``."""
    def recognise(evidence: Evidence) -> bool:
        index = {t: i for i, t in enumerate(evidence.params["model"]["tokens"])}
        seen = []
        for (prefix, num_preds), run in zip(evidence.params["cases"], evidence.observed):
            if len(prefix) > 1 and num_preds >= 2:
                want = feed([index.get(ch, 0) for ch in prefix], num_preds)
                seen.append(_fed(run)[:len(want)] == want)
        return bool(seen) and all(seen)
    return recognise


def _starts_at_last_character(evidence: Evidence) -> bool:
    """Per case with a longer prefix, the model's first input was the prefix's last character (nothing before it)."""
    index = {t: i for i, t in enumerate(evidence.params["model"]["tokens"])}
    firsts = [(_fed(run)[:1], [index.get(prefix[-1], 0)])
              for (prefix, num_preds), run in zip(evidence.params["cases"], evidence.observed) if len(prefix) > 1 and num_preds]
    return bool(firsts) and all(first == want for first, want in firsts)


#: torch's words when what should be one token id holds a row of vocabulary scores
NOT_ONE_TOKEN = re.compile(r"shape '\[1\]' is invalid for input of size \d+|only one element tensors can be converted "
                           r"to Python scalars|a Tensor with \d+ elements cannot be converted to Scalar")


def _not_one_token(evidence: Evidence) -> bool:
    return bool(NOT_ONE_TOKEN.search(evidence.message))  # an error, or the device check quoting one


def _both(*tests: Callable[[Evidence], bool]) -> Callable[[Evidence], bool]:
    return lambda evidence: all(test(evidence) for test in tests)


def _kept_predicting(evidence: Evidence) -> bool:
    """The model was called on for the predictions, not only for the prefix (the loop ran; its results were lost)."""
    return any(len(_fed(run)) > len(prefix) for (prefix, num_preds), run in zip(evidence.params["cases"], evidence.observed)
               if num_preds >= 2)


def _samples(evidence: Evidence) -> bool:
    """Not the argmax, yet every prediction fed back, the state carried, and the tokens as likely as sampled ones."""
    runs = _runs(evidence)
    if runs is None:
        return False
    model, cases = evidence.params["model"], evidence.params["cases"]
    tokens = model["tokens"]
    index = {t: i for i, t in enumerate(tokens)}
    chosen, expected, uniform, greedy = [], [], [], True
    net, vocab = build_model(model, reference_hooks())
    for (prefix, num_preds), run in zip(cases, runs):
        generated = generated_tokens(run["text"], prefix, num_preds, tokens) if run["text"].startswith(prefix) else None
        if generated is None or len(generated) != num_preds or any(t not in index for t in generated):
            return False
        if not all(call.get("continued") for call in run.get("calls") or []):
            return False
        ids = [index[ch] for ch in prefix] + [index[t] for t in generated]
        if _fed(run) != ids[:len(_fed(run))]:
            return False
        if not num_preds:
            continue
        with torch.no_grad():
            state = net.begin_state(batch_size=1, device=torch.device("cpu"))
            logits, _ = net(torch.tensor([ids[:-1]]), state)  # teacher-forced: row i predicts ids[i + 1]
        log_p = torch.log_softmax(logits[len(prefix) - 1:].double(), dim=1)
        picked = torch.tensor(ids[len(prefix):])
        greedy = greedy and bool(torch.equal(log_p.argmax(dim=1), picked))
        chosen += log_p[torch.arange(num_preds), picked].tolist()
        expected += (log_p.exp() * log_p).sum(dim=1).tolist()  # the mean log-likelihood of a sample: -entropy
        uniform += log_p.mean(dim=1).tolist()  # ... and of a token drawn uniformly at random
    if greedy or not chosen:
        return False
    mean = sum(chosen) / len(chosen)
    # closer to what sampling from the model scores than to what random tokens score
    return mean > (sum(expected) / len(expected) + sum(uniform) / len(uniform)) / 2


GREEDY_FIX = "outputs.append(int(y.argmax(dim=1).reshape(1))) after each call, then feed outputs[-1] to the next call"


@hookimpl
def grader_misconceptions(config):
    return [
        Misconception(
            "predict.argmax-wrong-dim", (TEXT, "predict.*"),
            "the next token is read from the model's output over the wrong dimension, so it is a row of "
            "vocabulary scores rather than one token id",
            "For one input character the model returns y of shape (1, vocab_size): one row, one score per token; "
            "the prediction is the index of the largest score in that row.",
            "outputs.append(int(y.argmax(dim=1).reshape(1)))", _not_one_token),
        Misconception(
            "predict.never-appended", (LENGTH, TEXT, STATE),
            "each prediction is computed but never appended to outputs, so the returned text is just the prefix",
            "Greedy prediction appends every argmax to outputs: that makes it part of the returned text and the "
            "input of the next step (without it the model is fed the prefix's last character over and over).",
            GREEDY_FIX, _both(_returns_as("never-appended"), _kept_predicting)),
        Misconception(
            "predict.only-generated", (LENGTH, TEXT, STATE),
            "only the predicted characters are returned, without the prefix",
            "predict returns the prefix followed by the num_preds characters it predicted.",
            "return ''.join(vocab.idx_to_token[i] for i in outputs), with outputs starting with the prefix's indices",
            _returns_as("only-generated")),
        Misconception(
            "predict.off-by-one", (LENGTH, TEXT, STATE),
            "the loop makes one prediction too few or too many: num_preds predictions are asked for",
            "The text after the prefix has exactly num_preds predicted tokens (none when num_preds is 0).",
            "for _ in range(num_preds): one call and one appended argmax each", _returns_as("one-too-few", "one-too-many")),
        Misconception(
            "predict.warm-up-outputs", (STATE, TEXT, LENGTH),
            "the warm-up loop appends the model's predictions instead of the prefix's characters",
            "During warm-up the model only builds up its state: the prefix's own characters are appended and fed "
            "in, the predictions during the prefix are thrown away.",
            "in the loop over prefix[1:]: _, state = net(get_input(), state); outputs.append(vocab[y])",
            _returns_as("warm-up-outputs")),
        Misconception(
            "predict.prefix-not-sliced", (STATE, LENGTH, TEXT),
            "the warm-up loops over the whole prefix instead of prefix[1:], so prefix[0] is appended and fed twice",
            "outputs already starts with prefix[0]; looping over all of prefix appends it a second time, so the text "
            "starts with it doubled and the model is fed prefix[0] twice before the rest.",
            "for y in prefix[1:]: _, state = net(get_input(), state); outputs.append(vocab[y])",
            _both(_returns_as("prefix-not-sliced"), _fed_first(lambda ids, n: ids[:1] + ids))),
        Misconception(
            "predict.feeds-last-prefix-character", (STATE, TEXT),
            "every prediction step feeds the prefix's last character again instead of the token just predicted",
            "Greedy prediction feeds each prediction back in as the next input, so the model continues its own "
            "text; fed the prefix's last character at every step, it never sees what it predicted.",
            "feed outputs[-1], the latest token, at each step: y, state = net(get_input(), state), then "
            "outputs.append(int(y.argmax(dim=1).reshape(1)))",
            _both(_returns_as("feeds-last-prefix"), _fed_first(lambda ids, n: ids[:-1] + ids[-1:] * n))),
        Misconception(
            "predict.skips-prefix", (STATE, TEXT),
            "the model is never fed the prefix: prediction starts from a fresh state with only the prefix's last "
            "character",
            "The warm-up feeds every prefix character in turn so that the state holds what the prefix says; without "
            "it the predictions ignore all but the last character.",
            "for y in prefix[1:]: _, state = net(get_input(), state); outputs.append(vocab[y]), before predicting",
            _both(_returns_as("skips-prefix"), _starts_at_last_character)),
        Misconception(
            "predict.fresh-state-after-warm-up", (STATE, TEXT),
            "the state the warm-up built is thrown away: predictions start from a fresh state, as if the prefix had "
            "never been fed",
            "The warm-up exists to build the state from the prefix; a second net.begin_state after the prefix loop, or "
            "a warm-up call that does not keep the state it returns, forgets the prefix.",
            "call net.begin_state once, before the warm-up, and keep `_, state = net(get_input(), state)` in every call",
            _both(_returns_as("fresh-after-warm-up"), lambda e: all(_prefix_fed(e)))),
        Misconception(
            "predict.state-reset-each-step", (STATE, TEXT),
            "the state is reset or dropped at every step: each call to the model starts afresh, not from the state "
            "the previous call returned",
            "The state carries everything seen so far; starting each call afresh makes every prediction depend on one "
            "character only.",
            "call net.begin_state once, then pass each returned state into the next call: y, state = net(X, state)",
            _returns_as("reset-each-step", "reset-all")),
        Misconception(
            "predict.argmin", (TEXT,),
            "each prediction is the argmin of the model's output, the least likely token, instead of the argmax",
            "Greedy prediction picks the token with the highest score.", f"y.argmax, not y.argmin: {GREEDY_FIX}",
            _returns_as("argmin")),
        Misconception(
            "predict.samples", (TEXT,),
            "predictions are sampled from the model's output instead of taking its argmax",
            "This exercise is greedy prediction: the same prefix must always give the same text, the most likely "
            "token at each step; sampling (torch.multinomial) gives a different text on each run.",
            GREEDY_FIX, _samples),
    ]
