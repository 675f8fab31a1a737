"""The judge survives whatever a hostile submission can make a reply, a result or a folder hold,
and the reports are written whatever text they carry.

All but the last test are fast unit tests that need no runner; the last grades a folder end to
end through ``grader.cli.main``.
"""

from __future__ import annotations

import base64
import json
import os
import random
import stat

import pluggy
import pytest

from conftest import REFERENCE
from grader import PROJECT, hookimpl, hookspecs, wire
from grader.config import RunConfig
from grader.definitions import Check, Probe
from grader.judge.loading import FILE_LIMIT, MAX_FILES, read_submission
from grader.judge.verdicts import MAX_EVENTS, Decoded, decode, verdict_for
from grader.protocol import ProtocolError, Reply, Status
from grader.report import gradescope, html, terminal, write_text_atomic
from grader.results import ERROR, FAILED, CheckResult, ExerciseResult, FileProblem, GradingReport, Verdict

LIMIT = 1 << 26


def utf8_safe(value) -> bool:
    """Every string in ``value`` (dict keys too) can be written as UTF-8."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return False
        return True
    if isinstance(value, dict):
        return all(utf8_safe(k) and utf8_safe(v) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return all(utf8_safe(v) for v in value)
    return True


def tensor_record(**changes) -> dict:
    record = dict(dtype="float32", shape=[2], device="cpu", requires_grad=False, is_leaf=True, has_grad_fn=False,
                  data=base64.b64encode(b"\x00" * 8).decode("ascii"))
    record.update(changes)
    return {wire.TENSOR_KEY: record}


# ------------------------------------------------------------------ wire.loads


@pytest.mark.parametrize("digits", [wire.MAX_INT_DIGITS + 1, 5000, 100_000])
def test_long_integers_are_wire_errors(digits):
    for literal in (b"9" * digits, b"-" + b"9" * digits):
        with pytest.raises(wire.WireError, match="integer too long"):
            wire.loads(b'{"value": [' + literal + b"]}", LIMIT)


def test_integers_up_to_the_limit_decode():
    literal = "9" * wire.MAX_INT_DIGITS
    assert wire.loads(f"[{literal}, -{literal}, 0]".encode(), LIMIT) == [int(literal), -int(literal), 0]


@pytest.mark.parametrize("raw", [
    b"[" * 100_000 + b"]" * 100_000,
    b'{"a":' * 100_000 + b"1" + b"}" * 100_000,
    b"[" * 100_000,  # unterminated as well
    b"[" * (wire.MAX_DEPTH + 2) + b"]" * (wire.MAX_DEPTH + 2),  # within json's recursion, past the judge's limit
])
def test_deep_nesting_is_a_wire_error(raw):
    with pytest.raises(wire.WireError):
        wire.loads(raw, LIMIT)


def test_lone_surrogates_become_visible_escapes_in_strings_and_keys():
    raw = b'{"\\ud800key": ["\\udcff bad", "pair \\ud83d\\ude00", {"\\udfff": "\\ud800"}], "ok": "caf\\u00e9"}'
    value = wire.loads(raw, LIMIT)
    assert utf8_safe(value)
    assert value["\\ud800key"][0] == "\\udcff bad"
    assert value["\\ud800key"][1] == "pair \U0001f600"  # a valid pair is a character, not an escape
    assert value["\\ud800key"][2] == {"\\udfff": "\\ud800"}
    assert value["ok"] == "café"
    json.dumps(value, ensure_ascii=False).encode("utf-8")


def test_oversize_result_is_a_wire_error():
    with pytest.raises(wire.WireError, match="over the 10-byte limit"):
        wire.loads(b"[" + b"1," * 10 + b"1]", 10)


def test_too_many_items_is_a_wire_error():
    with pytest.raises(wire.WireError, match="items"):
        wire.loads(b"[" + b"0," * wire.MAX_ITEMS + b"0]", LIMIT)
    keys = ",".join(f'"{i}":0' for i in range(wire.MAX_ITEMS + 1))
    with pytest.raises(wire.WireError, match="keys"):
        wire.loads(("{" + keys + "}").encode(), LIMIT)


@pytest.mark.parametrize("raw", [
    b"[NaN]", b"[Infinity]", b"[-Infinity]", b"[1e999]", b"[" + b"1" * 100 + b".5]", b"\xff\xfe", b"",
    b"[1,]", b'{"__float__": "1.5"}', b'{"__float__": ["nan"]}', b'{"__float__": {"a": 1}}', b'"\\ud800',
])
def test_malformed_json_is_a_wire_error(raw):
    with pytest.raises(wire.WireError):
        wire.loads(raw, LIMIT)


@pytest.mark.parametrize("record", [
    {wire.TENSOR_KEY: "not a record"},
    tensor_record(shape=[1e300]),
    tensor_record(shape="22"),
    tensor_record(shape=[2.5]),
    tensor_record(shape=[-2]),
    tensor_record(shape=[1] * 1000),
    tensor_record(data="\ud800"),
    tensor_record(data="!!!"),
    tensor_record(data=12),
    tensor_record(dtype=["float32"]),
    tensor_record(dtype="object"),
    tensor_record(shape=[3]),
    {wire.TENSOR_KEY: {"dtype": "float32"}},
])
def test_malformed_tensor_records_are_wire_errors(record):
    with pytest.raises(wire.WireError):
        wire.loads(json.dumps(record).encode(), LIMIT)


def test_a_valid_tensor_still_decodes():
    value = wire.loads(json.dumps({"t": tensor_record()}).encode(), LIMIT)["t"]
    assert value.shape == (2,) and value.array.tolist() == [0.0, 0.0]
    meta = wire.loads(json.dumps(tensor_record(shape=[10 ** 60, 0], device="meta", data=None)).encode(), LIMIT)
    assert meta.shape == (10 ** 60, 0) and meta.array is None  # metadata only: nothing is allocated


def test_mutated_results_decode_or_raise_wire_errors_only():
    valid = json.dumps({"value": {"t": tensor_record(), "xs": [1, 2.5, "a", None, True, {"k": [[]]}]},
                        "integrity": [{"what": "w", "file": "f.py"}]}).encode()
    rng = random.Random(0)
    alphabet = b'[]{}",:0123456789eE.-+\\u\xff\x00 ntfa'
    for _ in range(3000):
        raw = bytearray(valid)
        for _ in range(rng.randint(1, 4)):
            i = rng.randrange(len(raw))
            choice = rng.random()
            if choice < 0.4:
                raw[i] = rng.choice(alphabet)
            elif choice < 0.7:
                del raw[i]
            else:
                raw[i:i] = bytes([rng.choice(alphabet)]) * rng.randint(1, 80)
        try:
            value = wire.loads(bytes(raw), LIMIT)
        except wire.WireError:
            continue
        assert utf8_safe(value)


# ------------------------------------------------------------------ Reply.decode


def reply_line(**fields) -> bytes:
    data = dict(id=1, status="ok", seconds=0.5, printed=0, cpu_seconds=0.1, cpu_limit=2, signal=None, exit_code=None)
    data.update(fields)
    return json.dumps(data).encode() + b"\n"


@pytest.mark.parametrize("line", [
    b"", b"\n", b"null", b"[]", b"[1, 2]", b'"ok"', b"{}", b"\xff\xfe\n",
    b"[" * 100_000 + b"]" * 100_000,
    b'{"id": ' + b"1" * 5000 + b', "status": "ok"}',
    b'{"id": 1, "status": "ok", "seconds": NaN}',
    b'{"id": 1, "status": "ok", "seconds": 1e999}',
    b'{"id": 1, "status": "ok", "printed": Infinity}',
    reply_line(id="x"),
    reply_line(id=[1]),
    reply_line(id=None),
    reply_line(status="nope"),
    reply_line(status=["ok"]),
    reply_line(status={"a": 1}),
    reply_line(seconds="fast"),
    reply_line(seconds={"a": 1}),
    reply_line(printed="many"),
    reply_line(signal="SIGKILL"),
    reply_line(exit_code=[0]),
])
def test_garbage_replies_are_protocol_errors(line):
    with pytest.raises(ProtocolError):
        Reply.decode(line)


def test_reply_output_is_valid_unicode():
    # bytes that are not UTF-8, among them an encoded surrogate
    reply = Reply.decode(reply_line(printed=20), None, b"\xff\xfe printed \xed\xa0\x80 \xc3")
    assert "printed" in reply.output
    reply.output.encode("utf-8")


def test_mutated_replies_decode_or_raise_protocol_errors_only():
    valid = reply_line(id=3, status="ok", seconds=1.5, printed=3, cpu_seconds=1.0, cpu_limit=11, exit_code=0)
    rng = random.Random(1)
    for _ in range(3000):
        raw = bytearray(valid)
        for _ in range(rng.randint(1, 3)):
            i = rng.randrange(len(raw))
            raw[i] = rng.choice(b'[]{}",:0123456789eE.-\\u\xff ')
        try:
            reply = Reply.decode(bytes(raw), b'{"value": [1, 2]}', b"out")
        except ProtocolError:
            continue
        reply.output.encode("utf-8")
        decode(reply)  # the judge's next step takes whatever came through


# ------------------------------------------------------------------ verdicts


def _probe_run(ctx, **params):  # never runs here; a probe needs a module-level function
    return None


def make_check(judge) -> Check:
    return Check("grad_clipping", "odd", "an odd check", 1.0, Probe("grad_clipping", _probe_run, {"n": 1}), judge)


class Unprintable(Exception):
    def __str__(self):
        raise RuntimeError("no text")


@pytest.mark.parametrize("exc", [RuntimeError("\ud800 boom"), ZeroDivisionError("division by zero"),
                                 AssertionError(), OverflowError("big"), Unprintable(), RecursionError("deep"),
                                 LookupError("x" * 10_000)])
def test_any_exception_from_a_judge_is_an_error_verdict(exc):
    def judge(observed, n):
        raise exc

    verdict = verdict_for(make_check(judge), Decoded({"value": [1]}))
    assert verdict.status == ERROR
    assert "returned data of an unexpected form" in verdict.message
    assert type(exc).__name__ in verdict.message
    verdict.message.encode("utf-8")
    assert len(verdict.message) < 500


def test_a_judge_that_returns_no_verdict_fails_the_check():
    assert verdict_for(make_check(lambda observed, n: "yes"), Decoded({"value": 1})).status == FAILED


@pytest.mark.parametrize("error", [["a", "list"], {"a": 1}, 12, None, "\\ud800 " + "e" * 100_000])
def test_odd_error_values_become_error_verdicts(error):
    verdict = verdict_for(make_check(lambda observed, n: Verdict.passed()), Decoded({"error": error}))
    assert verdict.status == ERROR and len(verdict.message) < 3000
    verdict.message.encode("utf-8")


def test_integrity_events_with_odd_contents_are_short_strings():
    events = [{"what": ["x"] * 1000, "file": {"a": 1}}, {"what": 5, "file": 7}, "junk", 3, None,
              {"file": None}, {"what": "w" * 10_000, "file": "f.py"}, {"what": "replaced x", "file": ""},
              {"what": 1.5, "file": True}]
    found = Decoded({"value": 1, "integrity": events}).integrity_events()
    assert len(found) == 6  # the dicts among them
    for event in found:
        assert set(event) == {"what", "file"}
        assert isinstance(event["what"], str) and event["what"] and len(event["what"]) <= 200
        assert event["file"] is None or (isinstance(event["file"], str) and len(event["file"]) <= 200)
    assert found[0]["what"] == "<list>" and found[0]["file"] == "<dict>"
    assert found[1] == {"what": "5", "file": "7"}
    assert found[2] == {"what": "changed something", "file": None}
    assert found[3]["file"] == "f.py" and found[4] == {"what": "replaced x", "file": None}
    assert found[5] == {"what": "1.5", "file": "True"}
    many = Decoded({"value": 1, "integrity": [{"what": "w", "file": "f.py"}] * 1000}).integrity_events()
    assert len(many) == MAX_EVENTS
    assert Decoded({"value": 1, "integrity": "not a list"}).integrity_events() == []


def test_a_reply_with_a_hostile_result_decodes_to_a_failure():
    for result in (b"[" * 100_000, b"[" + b"9" * 10_000 + b"]", b'{"value": 1e999}', b"[1]", b"\xff"):
        decoded = decode(Reply(1, Status.OK, result=result))
        assert decoded.failure is not None and decoded.failure.status == ERROR
        assert decoded.integrity_events() == []


# ------------------------------------------------------------------ read_submission


def test_a_symbolic_link_is_not_followed(tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("SECRET = 'outside the folder'\n")
    folder = tmp_path / "submission"
    folder.mkdir()
    (folder / "mine.py").write_text("x = 1\n")
    (folder / "link.py").symlink_to(secret)
    (folder / "dangling.py").symlink_to(tmp_path / "missing.py")
    (folder / "loop.py").symlink_to(folder / "loop.py")
    files, problems = read_submission(folder)
    assert files == {"mine.py": "x = 1\n"}
    assert not any("outside the folder" in text for text in files.values())
    linked = {p.path: p.message for p in problems}
    assert set(linked) == {"link.py", "dangling.py", "loop.py"}
    assert all("is a symbolic link; it was not followed" in m for m in linked.values())


def test_a_file_name_that_is_not_utf8_is_a_problem_with_a_printable_name(tmp_path):
    folder = tmp_path / "submission"
    folder.mkdir()
    fd = os.open(os.fsencode(folder) + b"/bad\xff\xfe.py", os.O_WRONLY | os.O_CREAT, 0o644)
    os.write(fd, b"x = 1\n")
    os.close(fd)
    (folder / "good.py").write_text("y = 2\n")
    files, problems = read_submission(folder)
    assert files == {"good.py": "y = 2\n"}
    assert [p.path for p in problems] == ["bad\\xff\\xfe.py"]
    assert problems[0].path.isprintable() and "not valid UTF-8" in problems[0].message


def test_only_the_first_files_are_graded(tmp_path):
    for i in range(MAX_FILES + 8):
        (tmp_path / f"m{i:02d}.py").write_text(f"N = {i}\n")
    files, problems = read_submission(tmp_path)
    assert sorted(files) == [f"m{i:02d}.py" for i in range(MAX_FILES)]
    assert len(problems) == 1 and problems[0].path == "."
    assert f"only the first {MAX_FILES}" in problems[0].message and f"{MAX_FILES + 8} .py files" in problems[0].message
    assert "m32.py" in problems[0].message and "3 more" in problems[0].message


def test_special_files_are_skipped_without_blocking(tmp_path):
    os.mkfifo(tmp_path / "pipe.py")
    (tmp_path / "package.py").mkdir()
    (tmp_path / "ok.py").write_text("z = 3\n")
    files, problems = read_submission(tmp_path)
    assert files == {"ok.py": "z = 3\n"}
    assert [(p.path, p.message) for p in problems] == [("pipe.py", "is not a regular file; it was not read")]


def test_size_encoding_and_newline_rules_are_kept(tmp_path):
    (tmp_path / "big.py").write_bytes(b"#" * (FILE_LIMIT + 1))
    (tmp_path / "latin.py").write_bytes(b"name = '\xe9'\n")
    (tmp_path / "crlf.py").write_bytes(b"a = 1\r\nb = 2\r")
    (tmp_path / "__init__.py").write_text("")
    (tmp_path / "notes.txt").write_text("not python")
    files, problems = read_submission(tmp_path)
    assert files == {"crlf.py": "a = 1\nb = 2\n"}
    messages = {p.path: p.message for p in problems}
    assert messages["big.py"].startswith(f"is {FILE_LIMIT + 1} bytes")
    assert messages["latin.py"] == "is not UTF-8 text; save it as UTF-8"


def test_an_unreadable_file_is_a_problem(tmp_path):
    if os.geteuid() == 0:
        pytest.skip("root reads any file")
    path = tmp_path / "secret.py"
    path.write_text("x = 1\n")
    path.chmod(0)
    try:
        files, problems = read_submission(tmp_path)
    finally:
        path.chmod(stat.S_IRUSR | stat.S_IWUSR)
    assert files == {} and problems[0].message.startswith("cannot be read")


# ------------------------------------------------------------------ reporters


SURROGATE = "\ud800"


def hostile_report() -> GradingReport:
    check = CheckResult(
        check_id=f"ex{SURROGATE}.c", exercise=f"ex{SURROGATE}", title=f"title {SURROGATE}", hooks=(f"hook{SURROGATE}",),
        max_points=1.0, points=0.0, status=ERROR, message=f"ValueError: {SURROGATE} bad \udfff",
        details=f"details {SURROGATE}\x1b[31m", figures={f"k{SURROGATE}": f"v{SURROGATE}",
                                                         "chart": {"series": [{"label": SURROGATE, "y": [1, 2]}]}},
        output=f"printed {SURROGATE}\n", seconds=0.5)
    exercise = ExerciseResult(f"ex{SURROGATE}", f"Exercise {SURROGATE}", 0.0, 1.0, (check,),
                              figures={SURROGATE: [SURROGATE]})
    return GradingReport(submission=f"/tmp/sub{SURROGATE}", points=0.0, max_points=1.0, exercises=(exercise,),
                         problems=(FileProblem(f"bad{SURROGATE}.py", f"message {SURROGATE}"),),
                         implemented={f"hook{SURROGATE}": f"file{SURROGATE}.py"}, notices=(f"note {SURROGATE}",),
                         corpus={SURROGATE: SURROGATE}, grader_version="0.0.0-test")


def test_reporters_write_text_with_lone_surrogates(tmp_path):
    report = hostile_report()
    results = json.loads(gradescope.write_results_json(report, tmp_path).read_text(encoding="utf-8"))
    assert "\\ud800" in results["tests"][0]["output"] and "\\ud800" in results["output"]
    assert utf8_safe(results)
    page = html.write_html(report, tmp_path).read_text(encoding="utf-8")
    assert "\\ud800" in page and "\\x1b" in page
    summary = terminal.format_summary(report, RunConfig(verbose=True))
    summary.encode("utf-8")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.html", "results.json"]  # no temporary files left


def test_write_text_atomic_replaces_whole_files_and_escapes(tmp_path):
    path = tmp_path / "out.txt"
    path.write_text("old")
    write_text_atomic(path, f"new {SURROGATE}")
    assert path.read_bytes() == b"new \\ud800"
    (tmp_path / "target").write_text("kept")
    link = tmp_path / "link.txt"
    link.symlink_to(tmp_path / "target")
    write_text_atomic(link, "replaced")  # replaces the link itself, never writes through it
    assert (tmp_path / "target").read_text() == "kept" and not link.is_symlink()
    with pytest.raises(FileNotFoundError):
        write_text_atomic(tmp_path / "missing" / "out.txt", "x")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link.txt", "out.txt", "target"]


def test_a_failing_write_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    path = tmp_path / "report.html"
    path.write_text("previous")

    def full_disk(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", full_disk)
    with pytest.raises(OSError):
        write_text_atomic(path, "new")
    monkeypatch.undo()
    assert path.read_text() == "previous"
    assert [p.name for p in tmp_path.iterdir()] == ["report.html"]


class Broken:
    """A reporter that always fails."""

    def __init__(self, exc: Exception):
        self.exc = exc

    @hookimpl
    def grader_report(self, report, config):
        raise self.exc


class Recorder:
    def __init__(self):
        self.calls = 0

    @hookimpl(trylast=True)
    def grader_report(self, report, config):
        self.calls += 1


def test_one_failing_reporter_does_not_stop_the_others(tmp_path, capsys):
    from grader.cli import write_reports

    pm = pluggy.PluginManager(PROJECT)
    pm.add_hookspecs(hookspecs)
    recorder = Recorder()
    pm.register(recorder, name="recorder")
    pm.register(gradescope, name="grader.report.gradescope")
    pm.register(Broken(OSError(28, "No space left on device")), name="grader.report.html")
    pm.register(Broken(RuntimeError(f"template {SURROGATE} broke")), name="third.party")
    assert write_reports(pm, hostile_report(), RunConfig(out_dir=tmp_path)) is False
    assert recorder.calls == 1
    assert json.loads((tmp_path / "results.json").read_text(encoding="utf-8"))["tests"][0]["max_score"] == 1.0
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2
    assert err[0].startswith("grade: the report of plugin third.party could not be written: RuntimeError: template ")
    assert err[1].startswith("grade: the html report could not be written: OSError:")
    assert "free space" in err[1]


# ------------------------------------------------------------------ end to end


def test_grading_a_hostile_folder_writes_every_report(tmp_path, capsys, monkeypatch):
    """A hook raising an exception with a lone surrogate, a link to a file outside the folder, a file
    name that is not UTF-8, and a reporter plugin that fails: results.json and report.html are whole."""
    import grader.plugins
    from grader import cli

    folder = tmp_path / "submission"
    folder.mkdir()
    source = (REFERENCE / "grad_clipping.py").read_text()
    head, sep, tail = source.partition("def grad_clipping(net, theta):\n")
    assert sep
    (folder / "grad_clipping.py").write_text(head + sep + '    raise ValueError(chr(0xD800) + " bad " + chr(0xDFFF))\n' + tail)
    outside = tmp_path / "outside.py"
    outside.write_text("SECRET_OUTSIDE = 1\n")
    (folder / "predict.py").symlink_to(outside)
    fd = os.open(os.fsencode(folder) + b"/\xff.py", os.O_WRONLY | os.O_CREAT, 0o644)
    os.close(fd)

    plugin_manager = grader.plugins.get_plugin_manager

    def with_broken_reporter(*args, **kwargs):
        pm = plugin_manager(*args, **kwargs)
        pm.register(Broken(RuntimeError("plugin failed")), name="broken.reporter")
        return pm

    monkeypatch.setattr(grader.plugins, "get_plugin_manager", with_broken_reporter)
    out = tmp_path / "out"
    code = cli.main([str(folder), "--out", str(out)])
    captured = capsys.readouterr()
    assert code == cli.OK, captured.err
    assert "the report of plugin broken.reporter could not be written" in captured.err
    assert "Traceback" not in captured.err

    results = json.loads((out / "results.json").read_text(encoding="utf-8"))
    assert 0 <= results["score"] < sum(t["max_score"] for t in results["tests"])
    clipping = [t for t in results["tests"] if "grad_clipping" in t["tags"]]
    assert clipping and all(t["score"] == 0 for t in clipping)
    assert any("\\ud800 bad" in t["output"] for t in clipping), [t["output"] for t in clipping]
    assert "predict.py: is a symbolic link; it was not followed" in results["output"]
    assert "\\xff.py" in results["output"]

    page = (out / "report.html").read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>") and "\\ud800 bad" in page
    assert "SECRET_OUTSIDE" not in page + json.dumps(results)
    assert "\\ud800 bad" in captured.out  # the terminal summary ran too
    assert sorted(p.name for p in out.iterdir()) == ["report.html", "results.json"]
