import hashlib
import io
import math
import os
import re
import shutil
import sys
import time
import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from grader import corpus as corpus_mod
from grader.corpus import (
    ALPHABET,
    MIN_CHARS,
    TIME_MACHINE_SHA1,
    Corpus,
    CorpusError,
    MarkovSource,
    fetch_time_machine,
    load_corpus,
    markov_corpus,
    markov_source,
    preprocess,
)

SHARED_TIME_MACHINE = Path(__file__).resolve().parents[2] / "shared" / "data" / "timemachine.txt"


def book_preprocess_file(path):
    """The book's read_time_machine + char tokenize + flatten, verbatim in spirit."""
    with open(path, "r", encoding="utf-8") as f:
        lines = f.readlines()
    lines = [re.sub("[^A-Za-z]+", " ", line).strip().lower() for line in lines]
    tokens = [list(line) for line in lines]
    return "".join(tok for line in tokens for tok in line)


# --- Markov source ---------------------------------------------------------------


def test_same_seed_same_text():
    assert markov_corpus(5000, seed=0).text == markov_corpus(5000, seed=0).text
    # a fresh source (not the cached one) rebuilds the same chain
    fresh = MarkovSource(0)
    np.testing.assert_array_equal(fresh.table, markov_source(0).table)
    assert fresh.sample(2000, seed=3) == markov_source(0).sample(2000, seed=3)


def test_different_seed_different_text():
    assert markov_corpus(5000, seed=0).text != markov_corpus(5000, seed=1).text
    src = markov_source(0)
    assert src.sample(1000, seed=0) != src.sample(1000, seed=1)


def test_shorter_sample_is_prefix_of_longer():
    src = markov_source(0)
    assert src.sample(20_000, seed=5).startswith(src.sample(777, seed=5))
    assert src.sample(0) == ""


def test_table_is_a_valid_order2_chain():
    src = markov_source(0)
    table = src.table
    assert src.order == 2
    assert table.shape == (27, 27, 27)
    np.testing.assert_allclose(table.sum(axis=-1), 1.0, atol=1e-12)
    assert (table >= 0).all()
    allowed = (table > 0).sum(axis=-1)
    # after a letter: 2-5 letters plus space; after a space: 6-10 letters, never space
    assert (allowed[:, 1:] >= 3).all() and (allowed[:, 1:] <= 6).all()
    assert (table[:, 1:, 0] > 0).all()
    assert (table[:, 0, 0] == 0).all()
    with pytest.raises(ValueError):
        table[0, 0, 0] = 1.0  # read-only


def test_all_characters_occur_in_5000_chars():
    for seed in (0, 1, 2):
        text = markov_corpus(5000, seed=seed).text
        assert set(text) == set(ALPHABET), seed


def test_stationary_distribution_is_fixed_point():
    src = markov_source(0)
    pi = src.stationary()
    assert pi.shape == (27 * 27,)
    assert abs(pi.sum() - 1.0) < 1e-12
    table = src.table.reshape(27 * 27, 27)
    nxt = np.zeros_like(pi)
    for ctx in range(27 * 27):
        b = ctx % 27
        nxt[b * 27 : b * 27 + 27] += pi[ctx] * table[ctx]
    assert np.abs(nxt - pi).max() < 1e-12


def test_entropy_rate_in_target_band():
    for seed in (0, 1, 2, 3):
        h = markov_source(seed).entropy_rate()
        assert 0.9 <= h <= 1.6, (seed, h)
        assert 2.5 <= math.exp(h) <= 5.0


def test_entropy_rate_matches_empirical_conditional_entropy():
    src = markov_source(0)
    text = src.sample(200_000, seed=42)
    idx = np.frombuffer(text.encode("ascii"), dtype=np.uint8)
    codes = np.where(idx == ord(" "), 0, idx.astype(np.int64) - ord("a") + 1)
    triples = Counter(zip(codes[:-2].tolist(), codes[1:-1].tolist(), codes[2:].tolist()))
    contexts = Counter()
    for (a, b, _), n in triples.items():
        contexts[(a, b)] += n
    total = len(codes) - 2
    plug_in = -sum(n / total * math.log(n / contexts[(a, b)]) for (a, b, _), n in triples.items())
    assert plug_in == pytest.approx(src.entropy_rate(), rel=0.02)


def test_markov_corpus_fields():
    c = markov_corpus(3000, seed=0)
    assert isinstance(c, Corpus)
    assert len(c) == 3000
    assert c.entropy_rate == markov_source(0).entropy_rate()
    assert c.min_perplexity == pytest.approx(math.exp(c.entropy_rate))
    assert "  " not in c.text
    assert c.name == "markov-order2-seed0"


def test_generation_is_fast():
    src = markov_source(0)
    src.sample(100)  # warm
    best = min(_timed(lambda: src.sample(10_000)) for _ in range(5))
    assert best < 0.05


def _timed(fn):
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def test_corpus_without_entropy_has_no_min_perplexity():
    c = Corpus(name="x", text="abc", entropy_rate=None)
    assert c.min_perplexity is None
    assert len(c) == 3


# --- preprocessing and loading ----------------------------------------------------

SAMPLE = (
    "The Time Machine, by H. G. Wells [1898]\n"
    "\n"
    "\n"
    "I\n"
    "  The Time Traveller (for so it will be convenient to speak of him)\n"
    "was expounding a recondite matter to us. 42 -- ***\n"
    "...!!!\n"
    "Filby's ‘café’ 3rd\r\n"
    "end"
)


def test_preprocess_matches_book(tmp_path):
    expected = (
        "the time machine by h g wells"
        "i"
        "the time traveller for so it will be convenient to speak of him"
        "was expounding a recondite matter to us"
        "filby s caf rd"
        "end"
    )
    assert preprocess(SAMPLE) == expected
    path = tmp_path / "sample.txt"
    path.write_bytes(SAMPLE.encode("utf-8"))
    assert preprocess(path.read_text(encoding="utf-8")) == book_preprocess_file(path)


def test_preprocess_splits_lines_like_readlines():
    # old-Mac line ends split lines too, so no space appears between them
    assert preprocess("ab\rcd\r\nef\n\ngh") == "abcdefgh"
    assert preprocess("") == ""
    assert preprocess("\n\n  ..  \n") == ""


def test_load_corpus(tmp_path):
    path = tmp_path / "words.txt"
    path.write_text("Hello, World!\n" * 200, encoding="utf-8")
    c = load_corpus(path)
    assert c.name == "words.txt"
    assert c.entropy_rate is None and c.min_perplexity is None
    assert c.text == "hello world" * 200
    assert load_corpus(str(path)).text == c.text


def test_load_corpus_tolerates_bad_utf8(tmp_path):
    path = tmp_path / "latin1.txt"
    path.write_bytes(("caf\xe9 au lait\n" * 200).encode("latin-1"))
    assert load_corpus(path).text.startswith("caf au lait")


def test_load_corpus_missing_file(tmp_path):
    with pytest.raises(CorpusError, match="does not exist") as info:
        load_corpus(tmp_path / "nope.txt")
    assert "nope.txt" in str(info.value)
    assert isinstance(info.value, ValueError)


def test_load_corpus_directory(tmp_path):
    with pytest.raises(CorpusError, match="is a directory"):
        load_corpus(tmp_path)


@pytest.mark.skipif(
    sys.platform == "win32" or (hasattr(os, "geteuid") and os.geteuid() == 0),
    reason="permission bits do not stop this user from reading",
)
def test_load_corpus_unreadable(tmp_path):
    path = tmp_path / "secret.txt"
    path.write_text("a" * 2000)
    path.chmod(0)
    try:
        with pytest.raises(CorpusError, match="cannot read"):
            load_corpus(path)
    finally:
        path.chmod(0o600)


def test_load_corpus_read_error(tmp_path, monkeypatch):
    # as root, permission bits cannot make a file unreadable, so fake the failure
    path = tmp_path / "locked.txt"
    path.write_text("a" * 2000)

    def deny(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(corpus_mod, "open", deny, raising=False)
    with pytest.raises(CorpusError, match="cannot read corpus file .*Permission denied"):
        load_corpus(path)


def test_load_corpus_too_short(tmp_path):
    path = tmp_path / "short.txt"
    path.write_text("Only a few words here!\n\n123\n", encoding="utf-8")
    with pytest.raises(CorpusError) as info:
        load_corpus(path)
    msg = str(info.value)
    assert "only 21 characters" in msg
    assert f"at least {MIN_CHARS} letters" in msg


def test_load_corpus_exactly_minimum(tmp_path):
    path = tmp_path / "min.txt"
    path.write_text("a" * MIN_CHARS)
    assert len(load_corpus(path)) == MIN_CHARS
    path.write_text("a" * (MIN_CHARS - 1))
    with pytest.raises(CorpusError, match=f"only {MIN_CHARS - 1} characters"):
        load_corpus(path)


@pytest.mark.skipif(not SHARED_TIME_MACHINE.is_file(), reason="no local copy of The Time Machine")
def test_time_machine_preprocessing():
    c = load_corpus(SHARED_TIME_MACHINE)
    assert len(c) > 100_000
    assert set(c.text) <= set(ALPHABET)
    assert c.text == book_preprocess_file(SHARED_TIME_MACHINE)


# --- fetching ---------------------------------------------------------------------

FAKE_BOOK = b"Fake book text.\n" * 100


@pytest.fixture
def fake_sha(monkeypatch):
    monkeypatch.setattr(corpus_mod, "TIME_MACHINE_SHA1", hashlib.sha1(FAKE_BOOK).hexdigest())


@pytest.fixture
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the network must not be used")

    monkeypatch.setattr(urllib.request, "urlopen", refuse)


def serve(monkeypatch, payload):
    calls = []

    def fake_urlopen(url, timeout=None):
        calls.append((url, timeout))
        return io.BytesIO(payload)

    monkeypatch.setattr(urllib.request, "urlopen", fake_urlopen)
    return calls


def leftovers(folder):
    return [p.name for p in folder.iterdir() if p.name != "timemachine.txt"]


def test_fetch_cache_hit(tmp_path, fake_sha, no_network):
    (tmp_path / "timemachine.txt").write_bytes(FAKE_BOOK)
    assert fetch_time_machine(tmp_path) == tmp_path / "timemachine.txt"


@pytest.mark.skipif(not SHARED_TIME_MACHINE.is_file(), reason="no local copy of The Time Machine")
def test_fetch_cache_hit_real_checksum(tmp_path, no_network):
    shutil.copyfile(SHARED_TIME_MACHINE, tmp_path / "timemachine.txt")
    assert TIME_MACHINE_SHA1 == corpus_mod.TIME_MACHINE_SHA1
    assert fetch_time_machine(tmp_path) == tmp_path / "timemachine.txt"


def test_fetch_default_cache_dir(tmp_path, monkeypatch, fake_sha, no_network):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    cached = tmp_path / "rnn-grader" / "timemachine.txt"
    cached.parent.mkdir()
    cached.write_bytes(FAKE_BOOK)
    assert fetch_time_machine() == cached


def test_fetch_downloads_and_writes_atomically(tmp_path, monkeypatch, fake_sha):
    calls = serve(monkeypatch, FAKE_BOOK)
    cache = tmp_path / "a" / "b"
    path = fetch_time_machine(cache, timeout=3)
    assert path == cache / "timemachine.txt"
    assert path.read_bytes() == FAKE_BOOK
    assert calls == [(corpus_mod.TIME_MACHINE_URL, 3)]
    assert leftovers(cache) == []
    # second call is served from the cache
    assert fetch_time_machine(cache) == path
    assert len(calls) == 1


def test_fetch_replaces_stale_cache(tmp_path, monkeypatch, fake_sha):
    (tmp_path / "timemachine.txt").write_bytes(b"truncated")
    serve(monkeypatch, FAKE_BOOK)
    assert fetch_time_machine(tmp_path).read_bytes() == FAKE_BOOK
    assert leftovers(tmp_path) == []


def test_fetch_sha_mismatch_keeps_nothing(tmp_path, monkeypatch):
    serve(monkeypatch, b"<html>captive portal</html>")
    with pytest.raises(CorpusError, match="SHA-1") as info:
        fetch_time_machine(tmp_path)
    assert TIME_MACHINE_SHA1 in str(info.value)
    assert list(tmp_path.iterdir()) == []


def test_fetch_without_network_suggests_corpus_flag(tmp_path, monkeypatch):
    def offline(url, timeout=None):
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    with pytest.raises(CorpusError, match="--corpus PATH") as info:
        fetch_time_machine(tmp_path)
    assert "Name or service not known" in str(info.value)
    assert list(tmp_path.iterdir()) == []


def test_fetch_timeout_is_reported(tmp_path, monkeypatch):
    def slow(url, timeout=None):
        raise TimeoutError("timed out")

    monkeypatch.setattr(urllib.request, "urlopen", slow)
    with pytest.raises(CorpusError, match="timed out"):
        fetch_time_machine(tmp_path, timeout=0.01)
