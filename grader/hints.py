"""What well-known error messages usually mean, said to a student.

General hints apply to every hook; each exercise declares its own on its probes
(:attr:`grader.definitions.Probe.hints`), next to the checks that need them.
:func:`explain_error` words an error for a verdict: who raised it, what it usually
means (the hint comes first), then the error itself, trimmed to its first meaningful
sentences and without torch's advice where that is the wrong fix.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any, Iterable, Mapping, NamedTuple, Optional

from grader.prose import shorten


class Hint(NamedTuple):
    #: regular expression searched for in the error message
    pattern: str
    #: what to try, in a few words
    text: str


GENERAL_HINTS = (
    Hint(r"modified by an inplace operation", "a tensor needed for backward was changed in place: build new tensors, "
                                              "and detach the carried state instead of keeping its graph"),
    Hint(r"Expected all tensors to be on the same device", "create every tensor on the device you were given"),
    Hint(r"Torch not compiled with CUDA|no NVIDIA driver|CUDA", "do not hard-code 'cuda'; use the device argument"),
    Hint(r"meta tensors?|on the meta device|device='meta'|Cannot copy out of meta|device meta\b|tensor at meta\b",
         "this check passes device='meta'; create tensors with device=device and avoid .cpu(), .numpy() and .item()"),
    Hint(r"Can't detach views in-place",
         "the state being detached is a view of another tensor. Looping `for s in state: s.detach_()` over a "
         "single-tensor state (nn.RNN, nn.GRU) detaches its rows, which are views: detach a tensor state as a whole "
         "(state.detach_()) and loop only over a tuple (LSTM, scratch model). A model that returns a slice or "
         "reshape of its outputs as the state causes this too: return the state the layer returns"),
    Hint(r"object has no attribute 'params'",
         "an nn.Module was passed in, and only the scratch model has .params: take an nn.Module's parameters with "
         "net.parameters() (if isinstance(net, nn.Module))"),
    Hint(r"backward through the graph a second time",
         "the state carried over from the previous minibatch still holds that minibatch's graph, whose saved values "
         "its backward() freed: detach the state before the next minibatch (state.detach_() for one tensor, "
         "each item for a tuple)"),
    Hint(r"does not require grad and does not have a grad_fn",
         "the result is not connected to the parameters: somewhere the computation left autograd (.detach(), .data, "
         ".item(), .numpy(), torch.no_grad(), or a new tensor filled with values)"),
    Hint(r"a leaf Variable that requires grad is being used in an in-place operation",
         "a tensor that requires grad was changed in place: scale or fill it before calling requires_grad_(), and "
         "update parameters inside `with torch.no_grad():`"),
    Hint(r"one_hot is only applicable to index tensor",
         "F.one_hot takes int64 token indices: pass the indices themselves (.long()), not one-hot or float values"),
    Hint(r"Expected hidden size \(",
         "the state given to the recurrent layer is not of the shape it expects, (num_directions * num_layers, batch, "
         "hidden): pass on the state the layer returned (not its output sequence), and start from zeros of that shape"),
    Hint(r"input\.size\(-1\) must be equal to input_size",
         "the recurrent layer was built for inputs of another size: the first argument of nn.RNN(input_size, "
         "hidden_size, ...) is the number of features of each time step of its input (input_dim for the sine model, "
         "vocab_size for one-hot characters), not the hidden size"),
    Hint(r"Expected input batch_size \(\d+\) to match target batch_size \(\d+\)",
         "the loss expects one row of scores per token, outputs of shape (num_steps * batch_size, vocab_size) for "
         "num_steps * batch_size labels: reshape the recurrent layer's (T, B, H) output to (T * B, H) before the "
         "linear layer"),
    Hint(r"math range error",
         "math.exp overflowed: the perplexity is exp of the MEAN loss per token, math.exp(total_loss / total_tokens) "
         "with the division inside exp; exp of the summed loss is far too large for a float"),
    Hint(r"expected scalar type|must have the same dtype|expected m1 and m2 to have the same dtype|"
         r"input dtype \(torch\.\w+\) does not match weight dtype",
         "two tensors of different dtypes met in one operation: one-hot vectors are int64, convert them with "
         ".to(torch.float32)"),
)

#: how the runner marks a ModuleNotFoundError for a module that is neither a submission file nor installed
NOT_INSTALLED = " (not installed)"
#: import names whose distribution (what pip installs) is named otherwise
DISTRIBUTIONS = {"sklearn": "scikit-learn", "cv2": "opencv-python", "PIL": "pillow", "yaml": "pyyaml",
                 "skimage": "scikit-image", "bs4": "beautifulsoup4", "dateutil": "python-dateutil",
                 "attr": "attrs", "Crypto": "pycryptodome", "serial": "pyserial", "dotenv": "python-dotenv",
                 "jose": "python-jose", "OpenSSL": "pyopenssl"}
#: the book's own package, as its torch chapters import it; its pinned dependencies do not install on current
#: Pythons, hence --no-deps (and d2l.torch's own imports named beside it)
BOOK_PACKAGE = "d2l"


def install_command(name: str) -> str:
    """The pip command that installs the package a submission imports as ``name``."""
    if name == BOOK_PACKAGE:
        return "pip install d2l==0.17.6 --no-deps"
    return f"pip install {DISTRIBUTIONS.get(name, name)}"


def missing_package(name: str) -> str:
    """What to do about a package ``name`` that a submission imports and that is not installed where the grader runs,
    the important part first (a report's summary line shows about 160 characters)."""
    install = f"install it with `{install_command(name)}` in the environment you run `grade` from"
    if name != BOOK_PACKAGE:
        return install
    return ("the grader gives your functions the book's objects (vocab, iterators, models, updaters), so the import "
            "can go unless they call d2l's own functions (or guard it with try/except ImportError); to keep it, "
            f"{install} (d2l.torch also imports torchvision, the version made for your torch, matplotlib, pandas, "
            "requests and IPython)")


#: how the runner marks an error that the grader's own code (a probe, the reference's training loop) raised on what
#: the hook returned, with no code of the submission running: an error that is not the student's code's
GRADER_OWN = "no error in your code; the grader's check stopped on what it returned: "
#: what torch suggests that is never the fix for a student here (kept out of every quote)
WRONG_ADVICE = re.compile(r"retain_graph=True|set_detect_anomaly|anomaly detection|DistributedDataParallel|\bDDP\b|"
                          r"fburl|Facebook employee|report a bug|file an issue", re.I)
#: sentences that advise rather than describe (left out of a quote when a hint gives the advice)
ADVICE = re.compile(r"^(Hint|Use|Specify|Please|Consider|If you|To fix|You (can|may|might|should)|Try|Convert)\b")
#: errors a check's own harness raises to say what it saw (grader.training.StateNotDetached)
CHECK_ERRORS = frozenset({"StateNotDetached"})
#: error types raised by Python itself rather than by torch
PYTHON_ERRORS = frozenset({"TypeError", "AttributeError", "NameError", "KeyError", "IndexError", "ValueError",
                           "AssertionError", "UnboundLocalError", "OverflowError",
                           "ZeroDivisionError", "RecursionError", "SyntaxError", "ImportError", "ModuleNotFoundError"})
#: how probe parameters that are sizes are named in a message
SIZE_NAMES = {"vocab_size": "vocab", "num_hiddens": "hidden", "batch_size": "batch", "num_steps": "steps",
              "input_dim": "input_dim", "hidden_dim": "hidden_dim", "out_dim": "out_dim", "batch": "batch",
              "steps": "steps"}
#: a place in a submission file as the runner writes it: ``rnn_scratch.py:31`` (terminals make it a link)
LOCATION = r"[^\s,:()]+\.py:\d+"
#: the longest quote of an error, in characters
QUOTE_LIMIT = 240


@dataclasses.dataclass(frozen=True)
class RaisedError:
    """The runner's description of an exception in parts: ``"Kind: text at file.py:N in f: code"``."""

    kind: str
    text: str
    #: "rnn_scratch.py:31 in rnn: H = ..." (the newest frame of the submission), or ""
    where: str = ""
    #: raised by the grader's own code (see :data:`GRADER_OWN`)
    grader_own: bool = False

    @classmethod
    def parse(cls, error: str) -> "RaisedError":
        grader_own = error.startswith(GRADER_OWN)
        if grader_own:
            error = error[len(GRADER_OWN):]
        body, where = error, ""
        located = re.match(rf"(?s)^(?P<body>.*) at (?P<where>{LOCATION}(?: in |: )[^\n]*)$", error)
        if located:
            body, where = located["body"], located["where"]
        kind, text = "", body
        typed = re.match(r"(?s)^(?P<kind>[A-Za-z_][\w.]*): ?(?P<text>.*)$", body)
        if typed and not typed["kind"][0].islower():
            kind, text = typed["kind"], typed["text"]
            if kind == "TorchError":  # the runner's wrapper of a NotImplementedError that torch raised
                inner = re.match(r"(?s)^(?P<kind>[A-Za-z_]\w*): ?(?P<text>.*)$", text)
                kind, text = (inner["kind"], inner["text"]) if inner else (kind, text)
        return cls(kind, text.strip(), where, grader_own)

    @property
    def source(self) -> str:
        """Who wrote the message: "Python", "torch" or "the check"."""
        if self.kind in CHECK_ERRORS:
            return "the check"
        torchish = (re.search(r"[Tt]ensor|torch|CUDA|device|batch_size \(|input\.size", self.text)
                    and "object has no attribute" not in self.text)
        return "Python" if self.kind in PYTHON_ERRORS and not torchish else "torch"


def quote(text: str, advice: bool = True, limit: int = QUOTE_LIMIT) -> str:
    """An error's text cut to its first meaningful sentences, at a sentence or a word.

    The first sentence is kept whole up to twice ``limit`` (a quote cut short hides what matters); the next ones
    while the quote stays within ``limit``. torch's advice that is never the fix here (retain_graph, anomaly
    detection, DDP) is always left out, and with ``advice=False`` (a hint gives the advice) every sentence of
    advice, from the first on.
    """
    sentences = re.split(r"(?<=[.!?])\s+(?=[A-Z'\"\[(])", " ".join(text.split()))
    kept = [shorten(sentences[0], 2 * limit)]
    for sentence in sentences[1:]:
        if WRONG_ADVICE.search(sentence) or (not advice and ADVICE.match(sentence)):
            break
        if len(" ".join(kept + [sentence])) > limit:
            break
        kept.append(sentence)
    return " ".join(kept)


def matrix_shapes(text: str, sizes: Optional[Mapping[str, Any]] = None) -> str:
    """torch's "mat1 and mat2 shapes cannot be multiplied (4x28 and 48x48)" in plain words, sizes named; else "".

    :param sizes: e.g. a probe's parameters: ``num_hiddens=48`` names a 48 "hidden".
    """
    match = re.search(r"mat1 and mat2 shapes cannot be multiplied \((\d+)x(\d+) and (\d+)x(\d+)\)", text) or \
        re.search(r"a and b must have same reduction dim, but got \[(\d+), (\d+)\] X \[(\d+), (\d+)\]", text)  # 'meta'
    if not match:
        return ""
    r1, c1, r2, c2 = (int(v) for v in match.groups())
    names: dict[int, list[str]] = {}
    for key, value in (sizes or {}).items():
        if isinstance(value, int) and not isinstance(value, bool) and key in SIZE_NAMES:
            names.setdefault(value, []).append(SIZE_NAMES[key])

    def axis(n: int) -> str:
        return f"{' or '.join(dict.fromkeys(names[n]))} = {n}" if n in names else str(n)

    return (f"in a matrix product A @ B the columns of A must match the rows of B, but the left matrix is "
            f"({axis(r1)}, {axis(c1)}) and the right one ({axis(r2)}, {axis(c2)})")


def translate(error: str, hints: Iterable[Hint] = (), sizes: Optional[Mapping[str, Any]] = None) -> str:
    """What ``error`` usually means in plain words (a matrix-shape error, then the first matching hint), or ""."""
    parts = [matrix_shapes(error, sizes)]
    for hint in (*hints, *GENERAL_HINTS):
        if re.search(hint.pattern, error):
            parts.append(hint.text)
            break
    return "; ".join(p.rstrip(". ") for p in parts if p)


def explain_error(who: str, error: Any, hints: Iterable[Hint] = (), hint: str = "",
                  sizes: Optional[Mapping[str, Any]] = None, returned_by: str = "") -> str:
    """A verdict's words for an error the runner described: what it means first, then the trimmed error and where.

    ``"rnn raised an error: <what it means>. torch said (RuntimeError): <first sentences> (at file.py, line N, ...)"``,
    or without a known meaning ``"rnn raised RuntimeError: <first sentences> (at ...)"``. An error that the grader's
    own code raised on what the hook returned (``returned_by``, by default ``who``) is never said to be the student's.

    :param hint: the caller's own translation, said instead of the general ones.
    :param sizes: the probe's parameters, to name the sizes in a matrix-shape error.
    """
    raised = RaisedError.parse(error if isinstance(error, str) else str(error))
    if raised.grader_own:
        what = f"{raised.kind}: " if raised.kind else ""
        owner = returned_by or who
        return (f"the check could not use what {owner} returned: the grader's own code stopped with {what}"
                f"{quote(raised.text)} (an error of the check's, not raised by your code); check the type, shape and "
                f"dtype of what {owner} returns")
    missing = package_advice(raised)
    if missing:  # the advice says it; the quote need not
        raised = dataclasses.replace(raised, text=raised.text.replace(NOT_INSTALLED, ""))
    meaning = hint.rstrip(". ") or missing or translate(error, hints, sizes)
    where = f" (at {shorten(raised.where, 300)})" if raised.where else ""
    if not raised.kind:  # not the runner's description of an exception: said as it is
        return f"{who} raised {quote(raised.text)}{where}" + (f"; {meaning}" if meaning else "")
    if not meaning:
        return f"{who} raised {raised.kind}: {quote(raised.text)}{where}"
    if raised.kind in CHECK_ERRORS:  # the check's own account of what went wrong, not an error's name
        return f"{who} raised an error: {meaning}. The check saw that {quote(raised.text, advice=False)}{where}"
    return (f"{who} raised an error: {meaning}. {raised.source} said ({raised.kind}): "
            f"{quote(raised.text, advice=False)}{where}")


def package_advice(raised: RaisedError) -> str:
    """What to do about a package the runner found not installed (see :data:`NOT_INSTALLED`), or ""."""
    missing = re.match(r"No module named '([\w.]+)'", raised.text)
    if raised.kind != "ModuleNotFoundError" or not missing or NOT_INSTALLED.strip() not in raised.text:
        return ""
    name = missing[1].partition(".")[0]
    return f"{name} is not installed: {missing_package(name)}"


def hint_for(message: str, hints: Iterable[Hint] = ()) -> str:
    """`` (hint: ...)`` for the first hint whose pattern the message matches (the given ones first), else ``""``."""
    for hint in (*hints, *GENERAL_HINTS):
        if re.search(hint.pattern, message):
            return f" (hint: {hint.text})"
    return ""


def hidden_size_mismatch(error: str) -> Optional[tuple[tuple[int, ...], tuple[int, ...]]]:
    """``(expected, got)`` from torch's "Expected hidden size (a, b, c), got [d, e, f]", else None."""
    match = re.search(r"Expected hidden size \(([\d, ]+)\), got \[([\d, ]+)\]", error)
    if not match:
        return None
    return tuple(int(v) for v in match[1].split(",")), tuple(int(v) for v in match[2].split(","))


def with_device_hint(verdict: Any, device: str) -> Any:
    """A failed device check whose message shows a device mix-up, with what usually causes it."""
    message = verdict.message
    if verdict.fraction >= 1 or not re.search(r"device|meta|Cannot copy out", message) or "hint:" in message \
            or "raised an error:" in message:  # an error already translated (see explain_error)
        return verdict
    return dataclasses.replace(verdict, message=message + f" (hint: this check runs on '{device}'; create every tensor "
                               "on the device you were given or that of the inputs, and avoid .cpu(), .numpy() and .item())")
