"""The disk cache of reference computations: hits equal what was computed, keys follow arguments and code,
bad entries are computed again, and nothing is written or unpickled that should not be."""

from __future__ import annotations

import io
import json
import os
import pickle
from pathlib import Path

import pytest
import torch

from grader import refcache

CALLS: list = []
PLANTED_RAN: list = []


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    """Every default location points into the test's folder; the cache is off again afterwards."""
    monkeypatch.setenv("GRADER_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    CALLS.clear()
    PLANTED_RAN.clear()
    yield tmp_path / "cache"
    refcache.configure(False)
    refcache.code_key.cache_clear()


@refcache.cached()
def seeded(seed: int, size: int = 3, scale: float = 1.0) -> dict:
    CALLS.append((seed, size, scale))
    g = torch.Generator().manual_seed(seed)
    weights = torch.randn(size, size, generator=g) * scale
    return {"weights": weights, "transposed": weights.t(), "ids": torch.arange(size, dtype=torch.int64),
            "grad": torch.ones(2, requires_grad=True), "loss": float(weights.sum()), "extremes": [-0.0, float("nan")],
            "pair": (seed, "text"), "nothing": None}


class Point:
    def __init__(self, x: torch.Tensor, label: str):
        self.x, self.label = x, label


@refcache.cached(to_plain=lambda p: {"x": p.x, "label": p.label}, from_plain=lambda d: Point(d["x"], d["label"]))
def point(seed: int) -> Point:
    CALLS.append(seed)
    return Point(torch.randn(4, generator=torch.Generator().manual_seed(seed)), f"p{seed}")


@refcache.cached()
def anything(value) -> int:
    CALLS.append(value)
    return 7


def plant(value):
    """What a planted entry asks the unpickler to call: it must never run."""
    PLANTED_RAN.append(value)
    return value


class Planted:
    def __reduce__(self):
        return plant, ("ran",)


def entries(folder: Path) -> list[Path]:
    return sorted(folder.rglob("*.pt")) if folder.exists() else []


def assert_same(got: dict, want: dict) -> None:
    assert got.keys() == want.keys()
    for name in ("weights", "transposed", "ids", "grad"):
        assert torch.equal(got[name], want[name])
        assert (got[name].dtype, got[name].stride(), got[name].requires_grad) == \
               (want[name].dtype, want[name].stride(), want[name].requires_grad)
    assert got["loss"].hex() == want["loss"].hex()
    assert str(got["extremes"]) == "[-0.0, nan]" and got["pair"] == want["pair"] and got["nothing"] is None


# ---------------------------------------------------------------- hits, misses, off


def test_a_hit_returns_exactly_what_was_computed(private_cache):
    refcache.configure(None)
    computed = seeded(4)
    assert len(entries(private_cache)) == 1
    loaded = seeded(4)
    assert CALLS == [(4, 3, 1.0)]  # the second came from disk
    assert loaded is not computed
    assert_same(loaded, computed)
    assert_same(loaded, seeded.__wrapped__(4))  # and equals a fresh computation


def test_results_that_are_objects_are_rebuilt_from_their_plain_state(private_cache):
    refcache.configure(private_cache)
    first, second = point(2), point(2)
    assert CALLS == [2] and isinstance(second, Point)
    assert torch.equal(first.x, second.x) and second.label == "p2"


def test_a_result_that_is_not_plain_data_is_refused():
    refcache.configure(None)
    with pytest.raises(refcache.Uncacheable, match="Point"):
        refcache.cached()(point.__wrapped__)(1)


@pytest.mark.parametrize("setting", ["never configured", False])
def test_nothing_is_written_while_the_cache_is_off(tmp_path, setting):
    if setting is False:
        refcache.configure(tmp_path / "cache")
        refcache.configure(False)
    seeded(1)
    seeded(1)
    assert len(CALLS) == 2 and refcache.directory() is None
    assert not entries(tmp_path)


def test_the_default_folder_follows_the_environment(tmp_path, monkeypatch):
    refcache.configure(None)
    assert refcache.directory() == tmp_path / "cache"
    monkeypatch.delenv("GRADER_CACHE_DIR")
    assert refcache.directory() == tmp_path / "xdg" / "rnn-grader"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert refcache.directory() == tmp_path / "home" / ".cache" / "rnn-grader"
    refcache.configure(tmp_path / "elsewhere")
    assert refcache.directory() == tmp_path / "elsewhere"


def test_an_unwritable_folder_only_costs_the_speed_up(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    refcache.configure(blocker / "cache")
    assert_same(seeded(3), seeded(3))
    assert len(CALLS) == 2


# ---------------------------------------------------------------- keys


def test_keys_follow_every_argument_and_its_type():
    key = refcache.entry_key
    assert key(seeded, 1) == key(seeded, seed=1) == key(seeded, 1, 3, 1.0)  # defaults and keywords bound
    different = {key(seeded, 1), key(seeded, 2), key(seeded, 1, 4), key(seeded, 1, scale=1.5), key(seeded, 1, scale=1),
                 key(seeded, True), key(point, 1), key(anything, "1"), key(anything, [1]), key(anything, (1,)),
                 key(anything, {"a": 1}), key(anything, {"a": 1.0}), key(anything, -0.0), key(anything, 0.0)}
    assert len(different) == 14


@pytest.mark.parametrize("value", [object(), Path("corpus.txt"), {1: "int key"}, [torch.zeros(1)], b"bytes", 1 + 2j])
def test_arguments_it_cannot_key_exactly_are_computed_every_time(private_cache, value):
    refcache.configure(None)
    with pytest.raises(refcache.Uncacheable):
        refcache.entry_key(anything, value)
    assert anything(value) == anything(value) == 7
    assert len(CALLS) == 2 and not entries(private_cache)


def test_the_code_key_follows_versions_and_every_source_file(tmp_path, monkeypatch):
    package = tmp_path / "src"
    (package / "sub").mkdir(parents=True)
    (package / "a.py").write_text("A = 1\n")
    monkeypatch.setattr(refcache, "_source_roots", lambda: [package])

    def fresh_key() -> str:
        refcache.code_key.cache_clear()
        return refcache.code_key()

    keys = [fresh_key()]
    (package / "a.py").write_text("A = 2\n")
    keys.append(fresh_key())
    (package / "sub" / "b.py").write_text("")
    keys.append(fresh_key())
    (package / "notes.txt").write_text("not code")
    assert fresh_key() == keys[-1]
    monkeypatch.setattr(torch, "__version__", "0.0.1")
    keys.append(fresh_key())
    assert len(set(keys)) == 4


def test_the_sources_hashed_include_the_reference_solutions():
    import importlib.util

    reference = Path(importlib.util.find_spec("grader.reference").submodule_search_locations[0]).resolve()
    roots = refcache._source_roots()
    assert any(reference == root or reference.is_relative_to(root) for root in roots)
    assert any((root / "refcache.py").is_file() for root in roots)


def test_an_entry_of_other_code_is_not_served(private_cache, monkeypatch):
    refcache.configure(None)
    seeded(5)
    monkeypatch.setattr(torch, "__version__", "0.0.1")
    refcache.code_key.cache_clear()
    seeded(5)
    assert len(CALLS) == 2 and len(entries(private_cache)) == 2


def test_a_corpus_file_is_keyed_by_its_content_not_its_path(tmp_path):
    from grader import corpus
    from grader.checks import reference_runs
    from grader.config import RunConfig

    text = " ".join(f"word{i % 7} sentence" for i in range(300))

    def key(folder: str, content: str) -> str:
        path = tmp_path / folder / "corpus.txt"
        path.parent.mkdir(exist_ok=True)
        path.write_text(content)
        corpus._file_spec.cache_clear()  # a new process reads the file again
        setup = reference_runs.default_setup(corpus.corpus_spec(RunConfig(corpus_path=path)))
        return refcache.entry_key(reference_runs._trained, json.dumps(setup.to_params(), sort_keys=True),
                                  reference_runs.EPOCHS, "{}")

    first = key("a", text)
    assert key("b", text) == first  # another folder, same text
    assert key("a", text.replace("sentence", "phrase")) != first  # same path, new text


# ---------------------------------------------------------------- bad entries


def truncated(data: bytes) -> bytes:
    return data[: len(data) // 2]


@pytest.mark.parametrize("damage", [lambda d: b"", truncated, lambda d: b"garbage" * 10,
                                    lambda d: d.replace(b"weights", b"weighTS"), lambda d: d[:-1] + bytes([d[-1] ^ 1])])
def test_a_corrupt_entry_is_computed_again_and_rewritten(private_cache, damage):
    refcache.configure(None)
    computed = seeded(6)
    (path,) = entries(private_cache)
    path.write_bytes(damage(path.read_bytes()))
    assert_same(seeded(6), computed)
    assert len(CALLS) == 2
    assert_same(seeded(6), computed)
    assert len(CALLS) == 2  # rewritten: the third call read it


def test_an_entry_under_the_wrong_name_is_not_served(private_cache):
    refcache.configure(None)
    seeded(7)
    seeded(8)
    first, second = entries(private_cache)
    first.write_bytes(second.read_bytes())
    seeded(7)
    seeded(8)
    assert [call[0] for call in CALLS] == [7, 8, 7]


@pytest.mark.parametrize("writer", ["torch.save", "pickle.dump"])
def test_a_planted_entry_never_runs_code(private_cache, writer):
    refcache.configure(None)
    computed = seeded(9)
    (path,) = entries(private_cache)
    key = path.stem
    planted, body = {"key": key, "value": Planted()}, io.BytesIO()
    torch.save(planted, body) if writer == "torch.save" else pickle.dump(planted, body, protocol=2)
    path.write_bytes(refcache._sealed(body.getvalue()))  # sealed as the cache seals its own entries
    assert_same(seeded(9), computed)
    assert PLANTED_RAN == [] and len(CALLS) == 2


def test_the_entries_of_old_code_versions_are_removed(private_cache):
    root = private_cache / refcache.ENTRIES
    old = [root / f"{i:024x}" for i in range(5)]
    for age, folder in enumerate(old):
        folder.mkdir(parents=True)
        (folder / "x.pt").write_bytes(b"")
        os.utime(folder, (1_000_000 + age, 1_000_000 + age))
    unrelated = root / "notes"
    unrelated.mkdir()
    refcache.configure(None)
    seeded(1)
    kept = sorted(p.name for p in root.iterdir())
    newest = [p.name for p in old[-(refcache.KEEP_CODE_VERSIONS - 1):]]
    assert kept == sorted([refcache.code_key(), "notes", *newest])


# ---------------------------------------------------------------- a real reference computation


def test_the_reference_training_through_the_cache_is_bit_identical(private_cache):
    from grader.checks import reference_runs
    from grader.config import RunConfig
    from grader.corpus import corpus_spec, markov_corpus

    refcache.configure(None)
    markov_corpus.cache_clear()
    spec = corpus_spec(RunConfig())
    setup_json = json.dumps(reference_runs.default_setup(spec).to_params(), sort_keys=True)
    options = json.dumps({"max_batches": 4})  # a short run: the same code, a fraction of the time
    computed = reference_runs._trained(setup_json, 2, options)
    assert len(entries(private_cache)) == 1  # the run (it reads the corpus text only)
    markov_corpus(*spec["markov"])  # the corpus with its entropy rate, as the judge's facts read it
    assert len(entries(private_cache)) == 2
    loaded = reference_runs._trained(setup_json, 2, options)
    assert loaded is not computed and loaded.keys() == computed.keys()
    for got, want in zip(loaded["params"], computed["params"], strict=True):
        assert torch.equal(got, want) and got.dtype == want.dtype and got.stride() == want.stride()
    assert {k: v for k, v in loaded.items() if k != "params"} == {k: v for k, v in computed.items() if k != "params"}
    corpus = markov_corpus.__wrapped__(*spec["markov"])  # past the in-memory cache: read from disk
    assert corpus == markov_corpus(*spec["markov"])
    threads = torch.get_num_threads()
    try:  # a run served from disk still sets the thread count later reference computations rely on
        torch.set_num_threads(2)
        reference_runs._reference_training.__wrapped__(setup_json, 2, options)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(threads)
