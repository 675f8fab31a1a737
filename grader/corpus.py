"""Character corpora the grader trains on.

Two kinds of text:

* a generated corpus from an order-2 Markov chain over ``' abcdefghijklmnopqrstuvwxyz'``,
  whose entropy rate is known exactly, so a model's perplexity can be judged against
  the best any model could reach;
* real text (e.g. H. G. Wells' *The Time Machine*) preprocessed the way the book does it.

A grading trains on a *corpus spec*, small plain data that both processes turn into the
same vocabulary and token ids (:func:`corpus_spec`, :func:`vocab_and_ids`).
"""

from __future__ import annotations

import collections
import functools
import hashlib
import http.client
import io
import math
import os
import re
import tempfile
import urllib.request
from bisect import bisect_right
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from grader import refcache
from grader.secret import secret_seed

__all__ = [
    "ALPHABET",
    "MIN_CHARS",
    "TIME_MACHINE_URL",
    "TIME_MACHINE_SHA1",
    "CorpusError",
    "Corpus",
    "MarkovSource",
    "markov_source",
    "markov_corpus",
    "markov_text",
    "preprocess",
    "load_corpus",
    "fetch_time_machine",
    "Vocab",
    "encode",
    "corpus_spec",
    "corpus_facts",
    "vocab_and_ids",
]

#: the characters every corpus is made of, space first
ALPHABET = " abcdefghijklmnopqrstuvwxyz"
#: fewest characters a corpus may have after preprocessing
MIN_CHARS = 1000

TIME_MACHINE_URL = "http://d2l-data.s3-accelerate.amazonaws.com/timemachine.txt"
TIME_MACHINE_SHA1 = "090b5e7e70c295757f55df93cb0a180b9691891a"
_TIME_MACHINE_FILE = "timemachine.txt"

_V = len(ALPHABET)
_SPACE = 0


class CorpusError(ValueError):
    """A corpus cannot be loaded or fetched; the message says what to do instead."""


@dataclass(frozen=True)
class Corpus:
    name: str
    text: str
    #: nats per character; None when unknown (real text)
    entropy_rate: Optional[float]

    @property
    def min_perplexity(self) -> Optional[float]:
        """Lowest perplexity any model can reach on this source, if known."""
        return None if self.entropy_rate is None else math.exp(self.entropy_rate)

    def __len__(self) -> int:
        return len(self.text)


# ---------------------------------------------------------------------------
# Generated corpus
# ---------------------------------------------------------------------------


def _build_table(seed: int) -> np.ndarray:
    """Transition table ``P[a, b, c] = P(next=c | prev2=a, prev1=b)``.

    Rows after a letter allow a few letters plus space; rows after a space allow
    only letters (no double spaces), so the text splits into word-like runs.
    """
    rng = np.random.default_rng(seed)
    table = np.zeros((_V, _V, _V))
    letters = np.arange(1, _V)
    # A cycle through all letters, threaded through the rows after "<letter> ",
    # makes every letter reachable from every context: one recurrent class, so a
    # unique stationary distribution, and every character occurs.
    cycle = rng.permutation(letters)
    successor = {int(cycle[i]): int(cycle[(i + 1) % len(cycle)]) for i in range(len(cycle))}
    for a in range(_V):
        for b in range(_V):
            if b == _SPACE:
                # start of a word: a wider choice of first letters
                k = int(rng.integers(6, 11))
                chosen = rng.choice(letters, size=k, replace=False)
                if a != _SPACE and successor[a] not in chosen:
                    chosen[0] = successor[a]
                table[a, b, chosen] = rng.dirichlet(np.ones(k))
            else:
                k = int(rng.integers(2, 6))
                chosen = rng.choice(letters, size=k, replace=False)
                # short words after one letter are rarer than after two
                p_space = rng.uniform(0.05, 0.2) if a == _SPACE else rng.uniform(0.2, 0.45)
                table[a, b, chosen] = (1.0 - p_space) * rng.dirichlet(np.ones(k))
                table[a, b, _SPACE] = p_space
    return table


@dataclass(frozen=True, eq=False)
class MarkovSource:
    """An order-2 Markov chain over :data:`ALPHABET`, built deterministically from ``seed``."""

    seed: int
    order: int = field(default=2, init=False)
    #: ``table[a, b, c] = P(next=c | prev2=a, prev1=b)``, indices into :data:`ALPHABET`
    table: np.ndarray = field(init=False, repr=False)
    # per context: (cumulative thresholds, allowed chars, their indices) as lists; bisect on
    # short lists beats per-step numpy calls by a wide margin
    _rows: tuple = field(init=False, repr=False)

    def __post_init__(self) -> None:
        table = _build_table(self.seed)
        table.setflags(write=False)
        rows = []
        for a in range(_V):
            for b in range(_V):
                p = table[a, b]
                allowed = np.flatnonzero(p)
                thresholds = np.cumsum(p[allowed])[:-1].tolist()
                rows.append((thresholds, [ALPHABET[c] for c in allowed], allowed.tolist()))
        object.__setattr__(self, "table", table)
        object.__setattr__(self, "_rows", tuple(rows))

    def sample(self, num_chars: int, seed: int = 0) -> str:
        """``num_chars`` characters, starting as if after two spaces.

        Same ``(self.seed, seed)`` gives the same text, and a shorter sample is a
        prefix of a longer one.
        """
        if num_chars < 0:
            raise ValueError(f"num_chars must be >= 0, got {num_chars}")
        uniforms = np.random.default_rng([self.seed, seed]).random(num_chars).tolist()
        rows = self._rows
        ctx = _SPACE * _V + _SPACE
        out = []
        append = out.append
        for u in uniforms:
            thresholds, chars, idx = rows[ctx]
            j = bisect_right(thresholds, u)
            append(chars[j])
            ctx = (ctx % _V) * _V + idx[j]
        return "".join(out)

    def stationary(self) -> np.ndarray:
        """Stationary distribution over the ``27*27`` contexts ``(prev2, prev1)``, flattened."""
        n = _V * _V
        # context (a, b) moves to (b, c) with probability table[a, b, c]
        transition = np.zeros((n, n))
        rows = np.repeat(np.arange(n), _V)
        cols = (np.arange(n) % _V).repeat(_V) * _V + np.tile(np.arange(_V), n)
        transition[rows, cols] = self.table.reshape(-1)
        # pi (T - I) = 0 has rank n - 1 (one recurrent class); swapping one of its
        # equations for sum(pi) = 1 makes the system square and nonsingular
        system = transition.T - np.eye(n)
        system[-1] = 1.0
        rhs = np.zeros(n)
        rhs[-1] = 1.0
        pi = np.linalg.solve(system, rhs)
        pi = np.clip(pi, 0.0, None)
        pi /= pi.sum()
        # polish by power iteration (lazy, so periodicity cannot stall it)
        lazy = 0.5 * (transition + np.eye(n))
        for _ in range(10_000):
            nxt = pi @ lazy
            if np.abs(nxt - pi).max() < 1e-12:
                pi = nxt
                break
            pi = nxt
        else:  # pragma: no cover - the chain is built to converge
            raise RuntimeError("stationary distribution did not converge")
        return pi / pi.sum()

    @functools.cached_property
    def _entropy_rate(self) -> float:
        p = self.table.reshape(_V * _V, _V)
        with np.errstate(divide="ignore", invalid="ignore"):
            terms = np.where(p > 0, -p * np.log(p), 0.0)
        return float(self.stationary() @ terms.sum(axis=1))

    def entropy_rate(self) -> float:
        """Entropy rate in nats per character: ``sum_c pi(c) H(next | c)``."""
        return self._entropy_rate


@functools.lru_cache(maxsize=16)
def markov_source(seed: int = 0) -> MarkovSource:
    """The Markov source for ``seed``, built once per process."""
    return MarkovSource(seed)


def _corpus_fields(corpus: Corpus) -> tuple:
    return corpus.name, corpus.text, corpus.entropy_rate


def _corpus_from_fields(fields: tuple) -> Corpus:
    return Corpus(*fields)


# building the source and solving for its entropy rate is most of the cost; the text is small
@functools.lru_cache(maxsize=16)
@refcache.cached(to_plain=_corpus_fields, from_plain=_corpus_from_fields)
def markov_corpus(num_chars: int = 10_000, seed: int = 0) -> Corpus:
    """``num_chars`` characters from the Markov source for ``seed``."""
    return Corpus(
        name=f"markov-order2-seed{seed}",
        text=markov_text(num_chars, seed),
        entropy_rate=markov_source(seed).entropy_rate(),
    )


# ---------------------------------------------------------------------------
# Real text
# ---------------------------------------------------------------------------

_NON_LETTERS = re.compile("[^A-Za-z]+")


def preprocess(text: str) -> str:
    """The book's preprocessing for *The Time Machine*.

    Each line: runs of non-letters become one space, then strip and lowercase.
    The lines' characters are concatenated with no separator, as the book's
    ``load_corpus_time_machine`` flattens character tokens line by line.
    """
    # universal newlines, as reading the file with open(...).readlines() splits
    lines = io.StringIO(text, newline=None)
    return "".join(_NON_LETTERS.sub(" ", line).strip().lower() for line in lines)


def load_corpus(path: str | os.PathLike) -> Corpus:
    """Read a text file and preprocess it as the book does."""
    path = Path(path)
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            raw = f.read()
    except FileNotFoundError as exc:
        raise CorpusError(
            f"corpus file {str(path)!r} does not exist; check the path passed to --corpus"
        ) from exc
    except (OSError, ValueError) as exc:
        # Windows reports a directory as PermissionError, so ask the path itself
        if _is_dir(path):
            raise CorpusError(
                f"corpus path {str(path)!r} is a directory; pass a text file"
            ) from exc
        reason = getattr(exc, "strerror", None) or exc
        raise CorpusError(
            f"cannot read corpus file {str(path)!r}: {reason}; "
            "check its permissions or pass another file"
        ) from exc
    text = preprocess(raw)
    if len(text) < MIN_CHARS:
        raise CorpusError(
            f"corpus file {str(path)!r} has only {len(text)} characters after preprocessing "
            f"(letters and single spaces); at least {MIN_CHARS} letters are needed, "
            "so pass a longer text"
        )
    return Corpus(name=path.name, text=text, entropy_rate=None)


def _is_dir(path: Path) -> bool:
    try:
        return path.is_dir()
    except OSError:
        return False


def _default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "rnn-grader"


def _sha1(data: bytes) -> str:
    return hashlib.sha1(data).hexdigest()


def fetch_time_machine(cache_dir: Optional[Path] = None, timeout: float = 10) -> Path:
    """Path to a verified copy of the book's *The Time Machine*, downloading it if needed.

    Never needed to grade: without network, pass a local text file with ``--corpus``.
    """
    cache_dir = Path(cache_dir) if cache_dir is not None else _default_cache_dir()
    target = cache_dir / _TIME_MACHINE_FILE
    expected = TIME_MACHINE_SHA1
    try:
        if target.is_file() and _sha1(target.read_bytes()) == expected:
            return target
    except OSError:
        pass  # unreadable cache entry: fetch a fresh copy over it

    url = TIME_MACHINE_URL
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            data = response.read()
    except (OSError, http.client.HTTPException) as exc:  # URLError is an OSError
        reason = getattr(exc, "reason", exc)
        raise CorpusError(
            f"cannot download The Time Machine from {url} ({reason}); "
            "no network is needed to grade: pass --corpus PATH to train on a local text file, "
            "or leave it out to use the generated Markov corpus"
        ) from exc

    actual = _sha1(data)
    if actual != expected:
        raise CorpusError(
            f"downloaded file from {url} has SHA-1 {actual}, expected {expected}; "
            "it was not kept. Try again later, or pass --corpus PATH with a local copy"
        )

    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=cache_dir, prefix=".timemachine-", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            # atomic: a concurrent reader sees either no file or the whole file
            os.replace(tmp, target)
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise
    except OSError as exc:
        raise CorpusError(
            f"cannot write the downloaded file into cache folder {str(cache_dir)!r}: {exc}; "
            "set XDG_CACHE_HOME to a writable folder or pass --corpus PATH"
        ) from exc
    return target


# ---------------------------------------------------------------------------
# What a grading trains on
# ---------------------------------------------------------------------------


class Vocab:
    """The book's character vocabulary: ``<unk>`` first, then tokens by falling frequency."""

    def __init__(self, tokens: Sequence[str]):
        counts = collections.Counter(tokens)
        ordered = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
        self.idx_to_token = ["<unk>"] + [tok for tok, _ in ordered]
        self.token_to_idx = {tok: i for i, tok in enumerate(self.idx_to_token)}

    def __len__(self) -> int:
        return len(self.idx_to_token)

    def __getitem__(self, tokens: Any) -> Any:
        if not isinstance(tokens, (list, tuple)):
            return self.token_to_idx.get(tokens, self.unk)
        return [self.__getitem__(token) for token in tokens]

    def to_tokens(self, indices: Any) -> Any:
        if hasattr(indices, "tolist"):
            indices = indices.tolist()
        if not isinstance(indices, (list, tuple)):
            return self.idx_to_token[int(indices)]
        return [self.idx_to_token[int(i)] for i in indices]

    @property
    def unk(self) -> int:
        return 0


def encode(text: str, vocab: Vocab) -> list[int]:
    return [vocab[ch] for ch in text]

#: every training check reads this many characters, of the generated corpus or of --corpus
TRAINING_CHARS, MARKOV_SEED = 4000, 0


def markov_spec(num_chars: int, seed: int) -> dict:
    return {"markov": [num_chars, seed]}


def text_spec(text: str, num_chars: Optional[int] = None) -> dict:
    """A text corpus: the vocabulary of the whole text, the first ``num_chars`` characters to train on."""
    vocab = Vocab(list(text))
    return {"tokens": vocab.idx_to_token, "ids": encode(text[:num_chars], vocab)}


def corpus_spec(config: Any) -> dict:
    """The corpus of a grading: ``--corpus`` (``config.corpus_path``) if given, else the generated one."""
    if config.corpus_path is None:
        return markov_spec(TRAINING_CHARS, secret_seed(getattr(config, "secret", None), MARKOV_SEED, "corpus"))
    return _file_spec(str(config.corpus_path))


@functools.lru_cache(maxsize=2)
def _file_spec(path: str) -> dict:
    corpus = load_corpus(path)
    return dict(text_spec(corpus.text, TRAINING_CHARS), name=corpus.name)


def corpus_facts(spec: dict) -> dict:
    """Name, length and lowest reachable perplexity of the corpus, for the report."""
    if "markov" in spec:
        corpus = markov_corpus(*spec["markov"])
        return {"name": corpus.name, "characters": len(corpus), "min_perplexity": corpus.min_perplexity}
    return {"name": spec.get("name", "text file"), "characters": len(spec["ids"]), "min_perplexity": None}


@functools.lru_cache(maxsize=16)
def markov_text(num_chars: int = 10_000, seed: int = 0) -> str:
    """The text of :func:`markov_corpus` alone: what a training run needs, without the entropy-rate solve."""
    return markov_source(seed).sample(num_chars, seed=0)


def vocab_and_ids(spec: dict) -> tuple[Vocab, list[int]]:
    """The vocabulary and token ids a corpus spec stands for."""
    if "markov" in spec:
        text = markov_text(*spec["markov"])
        vocab = Vocab(list(text))
        return vocab, encode(text, vocab)
    vocab = Vocab([])
    vocab.idx_to_token = list(spec["tokens"])
    vocab.token_to_idx = {tok: i for i, tok in enumerate(vocab.idx_to_token)}
    return vocab, list(spec["ids"])
