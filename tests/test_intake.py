"""Finding the students of a batch folder and staging each one: layouts, archives, links, limits."""

from __future__ import annotations

import io
import json
import os
import stat
import tarfile
import zipfile
from pathlib import Path

import pytest

from grader.judge import intake, loading, staging
from grader.judge.intake import Entry, discover
from grader.judge.staging import fingerprint, stage

SOLUTION = "from grader import hookimpl\n\n\n@hookimpl\ndef grad_clipping(net, theta):\n    pass\n"


def write(path: Path, text: str = SOLUTION) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def make_zip(path: Path, members: dict) -> Path:
    """A zip archive of ``{name or ZipInfo: text or bytes}``, compressed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return path


def make_tar(path: Path, members: dict, mode: str = "w:gz") -> Path:
    """A tar archive of ``{name: text or bytes, or a TarInfo as the key for a member without data}``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, mode) as archive:
        for name, data in members.items():
            if isinstance(name, tarfile.TarInfo):
                archive.addfile(name)
                continue
            raw = data.encode() if isinstance(data, str) else data
            info = tarfile.TarInfo(name)
            info.size = len(raw)
            archive.addfile(info, io.BytesIO(raw))
    return path


def by_id(found: intake.Intake) -> dict[str, Entry]:
    return {e.student: e for e in found.entries}


def staged_files(staged: staging.Staged) -> dict[str, str]:
    assert staged.folder is not None, staged
    return {p.name: p.read_text() for p in sorted(staged.folder.iterdir())}


def stage_one(tmp_path: Path, entry: Entry) -> staging.Staged:
    return stage(entry, tmp_path / "staged" / entry.student)


# ------------------------------------------------------------------------------------------- one entry per student


def test_every_kind_of_entry_is_a_student_and_stages_its_files(tmp_path):
    root = tmp_path / "subs"
    write(root / "alice" / "rnn_scratch.py", "alice")
    make_zip(root / "bob.zip", {"rnn_scratch.py": "bob", "notes.txt": "not code"})
    make_tar(root / "carol.tar.gz", {"rnn_scratch.py": "carol"})
    make_tar(root / "dave.tgz", {"predict.py": "dave", "work.ipynb": "{}"})
    make_tar(root / "frank.tar", {"predict.py": "frank"}, mode="w")
    write(root / "erin.py", "erin")
    write(root / "README.txt", "instructions")
    write(root / ".DS_Store", "")
    write(root / "__MACOSX" / "._bob.zip", "")

    found = discover(root)
    assert found.layout == "entries" and found.problem is None
    assert [e.student for e in found.entries] == ["alice", "bob", "carol", "dave", "erin", "frank"]
    assert {e.student: e.kind for e in found.entries} == {"alice": "folder", "bob": "zip", "carol": "tar.gz",
                                                          "dave": "tar.gz", "erin": "py", "frank": "tar"}
    assert {"README.txt", ".DS_Store", "__MACOSX"} <= set(found.ignored)
    assert "6 students" in found.description
    expected = {"alice": {"rnn_scratch.py": "alice"}, "bob": {"rnn_scratch.py": "bob"},
                "carol": {"rnn_scratch.py": "carol"}, "dave": {"predict.py": "dave", "work.ipynb": "{}"},
                "erin": {"erin.py": "erin"}, "frank": {"predict.py": "frank"}}
    for entry in found.entries:
        staged = stage_one(tmp_path, entry)
        assert staged.status is None and staged.message == ""
        assert staged_files(staged) == expected[entry.student]


def test_ids_are_safe_folder_names():
    assert intake.safe_id("Jane Doe (2)") == "Jane_Doe__2_"
    assert intake.safe_id("..") == "_." and intake.safe_id(".hidden") == "_hidden" and intake.safe_id("") == "_"
    assert intake.safe_id("a/b\\c") == "a_b_c"
    assert intake.safe_id("ok.name@x+y-z_1") == "ok.name@x+y-z_1"
    assert len(intake.safe_id("x" * 500)) == intake.ID_LENGTH


def test_an_archive_whose_files_sit_in_one_nested_folder_uses_that_folder(tmp_path):
    root = tmp_path / "subs"
    make_zip(root / "alice.zip", {"alice/exercises/rnn_scratch.py": "a", "alice/exercises/predict.py": "b",
                                  "alice/README.md": "x", "__MACOSX/alice/exercises/._rnn_scratch.py": "fork",
                                  "alice/exercises/__pycache__/junk.py": "cache"})
    staged = stage_one(tmp_path, discover(root).entries[0])
    assert staged_files(staged) == {"predict.py": "b", "rnn_scratch.py": "a"}
    assert any("alice/exercises/" in note for note in staged.notes)


def test_of_several_folders_the_shallowest_with_most_files_is_used_and_the_others_named(tmp_path):
    root = tmp_path / "subs"
    make_zip(root / "alice.zip", {"old/rnn_scratch.py": "old", "new/rnn_scratch.py": "new", "new/predict.py": "new",
                                  "deep/er/a.py": "x", "deep/er/b.py": "x", "deep/er/c.py": "x"})
    staged = stage_one(tmp_path, discover(root).entries[0])
    assert staged_files(staged) == {"predict.py": "new", "rnn_scratch.py": "new"}
    note = next(n for n in staged.notes if "only one folder is graded" in n)
    assert "new/" in note and "old/" in note and "deep/er/" in note


def test_top_level_files_win_over_subfolders_which_are_named(tmp_path):
    root = tmp_path / "subs"
    write(root / "alice" / "rnn_scratch.py", "top")
    write(root / "alice" / "utils" / "helpers.py", "sub")
    staged = stage_one(tmp_path, discover(root).entries[0])
    assert staged_files(staged) == {"rnn_scratch.py": "top"}
    assert any("utils/" in note for note in staged.notes)


def test_a_folder_holding_only_an_archive_uses_the_archive(tmp_path):
    root = tmp_path / "subs"
    make_zip(root / "alice" / "upload.zip", {"rnn_scratch.py": "zipped"})
    staged = stage_one(tmp_path, discover(root).entries[0])
    assert staged_files(staged) == {"rnn_scratch.py": "zipped"}
    assert any("upload.zip" in note for note in staged.notes)


def test_no_py_files_is_empty_with_advice(tmp_path):
    root = tmp_path / "subs"
    (root / "alice").mkdir(parents=True)
    write(root / "bob" / "solution.ipynb", "{}")
    write(root / "bob" / "__init__.py", "")
    found = by_id(discover(root))
    empty = stage_one(tmp_path, found["alice"])
    assert (empty.folder, empty.status) == (None, intake.EMPTY)
    assert "alice/ has no .py files" in empty.message and "rnn_scratch.py" in empty.message
    notebook = stage_one(tmp_path, found["bob"])  # a notebook is graded like a .py file (grader.notebooks)
    assert notebook.status is None and (notebook.folder / "solution.ipynb").read_text() == "{}"


def test_an_unsupported_archive_is_an_entry_that_says_what_to_submit(tmp_path):
    root = tmp_path / "subs"
    (root / "alice.rar").parent.mkdir(parents=True)
    (root / "alice.rar").write_bytes(b"Rar!\x1a\x07\x00")
    entry = discover(root).entries[0]
    assert entry.student == "alice" and entry.problem[0] == intake.BAD_ARCHIVE
    staged = stage_one(tmp_path, entry)
    assert staged.status == intake.BAD_ARCHIVE and ".zip" in staged.message and staged.folder is None


def test_a_batch_folder_that_cannot_be_used_is_a_problem_not_an_exception(tmp_path):
    missing = discover(tmp_path / "nowhere")
    assert missing.problem and "does not exist" in missing.problem and missing.entries == ()
    not_folder = discover(write(tmp_path / "file.txt", "x"))
    assert not_folder.problem and "is not a folder" in not_folder.problem


def test_an_empty_batch_folder_says_what_was_expected(tmp_path):
    found = discover(tmp_path)
    assert found.entries == () and "no submissions found" in found.description


# ------------------------------------------------------------------------------------------- links and ids


def test_a_linked_entry_is_never_followed(tmp_path):
    root = tmp_path / "subs"
    elsewhere = write(tmp_path / "elsewhere" / "rnn_scratch.py", "instructor's")
    root.mkdir()
    (root / "alice").symlink_to(elsewhere.parent)
    (root / "bob.py").symlink_to(elsewhere)
    found = by_id(discover(root))
    for student in ("alice", "bob"):
        assert found[student].problem[0] == intake.LINK
        staged = stage_one(tmp_path, found[student])
        assert staged.status == intake.LINK and staged.folder is None and "symbolic link" in staged.message
        assert not any((tmp_path / "staged" / student).iterdir())


def test_a_linked_helper_inside_a_folder_is_not_staged(tmp_path):
    root = tmp_path / "subs"
    secret = write(tmp_path / "instructor" / "answers.py", "SECRET ANSWER")
    write(root / "alice" / "rnn_scratch.py", "mine")
    (root / "alice" / "helper.py").symlink_to(secret)
    (root / "alice" / "more").symlink_to(secret.parent)
    staged = stage_one(tmp_path, discover(root).entries[0])
    assert staged.status is None and staged_files(staged) == {"rnn_scratch.py": "mine"}
    assert any("helper.py" in note and "symbolic links are not followed" in note for note in staged.notes)
    assert not any("SECRET" in p.read_text() for p in staged.folder.iterdir())


def test_two_entries_for_one_id_are_all_flagged_naming_every_source(tmp_path):
    root = tmp_path / "subs"
    write(root / "alice" / "rnn_scratch.py")
    make_zip(root / "alice.zip", {"rnn_scratch.py": SOLUTION})
    write(root / "Bob.py")
    write(root / "bob" / "predict.py")
    write(root / "carol.py")
    found = discover(root)
    flagged = {e.source: e.problem for e in found.entries if e.problem}
    assert set(flagged) == {"alice/", "alice.zip", "Bob.py", "bob/"}
    assert all(status == intake.DUPLICATE for status, _ in flagged.values())
    assert "alice/ and alice.zip both name student 'alice'; keep one and run again" == flagged["alice.zip"][1]
    assert "letter case" in flagged["bob/"][1] and "Bob.py" in flagged["bob/"][1]
    staged = stage_one(tmp_path, next(e for e in found.entries if e.source == "alice.zip"))
    assert staged.status == intake.DUPLICATE and staged.folder is None
    assert stage_one(tmp_path, by_id(found)["carol"]).status is None


def test_a_name_that_is_not_utf8_still_grades_under_an_escaped_id(tmp_path):
    root = tmp_path / "subs"
    root.mkdir()
    try:
        (Path(os.fsdecode(os.fsencode(root) + b"/caf\xe9.py"))).write_text("cafe")
        os.mkdir(os.fsencode(root) + b"/jos\xe9")
    except (OSError, UnicodeError):
        pytest.skip("this filesystem refuses names that are not UTF-8")
    (Path(os.fsdecode(os.fsencode(root) + b"/jos\xe9")) / "predict.py").write_text("jose")
    found = by_id(discover(root))
    assert set(found) == {"caf_xe9", "jos_xe9"}
    for student, files in {"caf_xe9": {"caf_xe9.py": "cafe"}, "jos_xe9": {"predict.py": "jose"}}.items():
        assert any("not valid UTF-8" in note for note in found[student].notes)
        staged = stage_one(tmp_path, found[student])
        assert staged.status is None and staged_files(staged) == files
        assert any("not valid UTF-8" in note for note in staged.notes)
        assert fingerprint(found[student]) == fingerprint(found[student])


# ------------------------------------------------------------------------------------------- Gradescope export


METADATA = """\
submission_101:
  :submitters:
  - :name: Alice Adams
    :sid: '111'
    :email: alice.adams@uni.edu
  :created_at: 2024-03-01 10:00:00.000000000 -08:00
  :score: !ruby/object:BigDecimal 18:0.1e2
submission_102:
  :submitters:
  - :name: Bob Brown
    :sid: '222'
    :email: bob@uni.edu
  - :name: Carol Chen
    :sid: '333'
    :email: carol@uni.edu
  :score: 9.0
submission_104:
  :submitters:
  - :name: Dan Gone
    :sid: '444'
"""


def gradescope_export(root: Path, metadata: str = METADATA) -> Path:
    export = root / "assignment_42_export"
    write(export / "submission_metadata.yml", metadata)
    for number in (101, 102, 103):
        write(export / f"submission_{number}" / "rnn_scratch.py", str(number))
    write(root / "README.txt", "downloaded from Gradescope")
    return export


def test_gradescope_export_names_students_from_its_metadata(tmp_path):
    gradescope_export(tmp_path)
    found = discover(tmp_path)
    assert found.layout == "gradescope" and "Gradescope export" in found.description
    assert "assignment_42_export/submission_metadata.yml" in found.description
    entries = by_id(found)
    assert set(entries) == {"alice.adams", "bob", "submission_103", "444"}
    alice, group = entries["alice.adams"], entries["bob"]
    assert (alice.name, alice.email, alice.lms_id) == ("Alice Adams", "alice.adams@uni.edu", "111")
    assert group.name == "Bob Brown, Carol Chen" and group.lms_id == "222, 333"
    assert group.source == "assignment_42_export/submission_102/"
    assert any("not in submission_metadata.yml" in n for n in entries["submission_103"].notes)
    assert entries["444"].problem[0] == intake.EMPTY and "no folder" in entries["444"].problem[1]
    assert found.ignored == ("README.txt",)
    assert staged_files(stage_one(tmp_path, group)) == {"rnn_scratch.py": "102"}
    third = stage_one(tmp_path, entries["submission_103"])
    assert third.status is None and any("not in submission_metadata.yml" in n for n in third.notes)


def test_gradescope_metadata_that_does_not_parse_grades_folders_by_name(tmp_path):
    export = gradescope_export(tmp_path, "submission_101: [unclosed\n  - : :\n")
    found = discover(export)
    assert found.layout == "gradescope" and "not valid YAML" in found.description
    assert [e.student for e in found.entries] == ["submission_101", "submission_102", "submission_103"]
    assert all(stage_one(tmp_path, e).status is None for e in found.entries)


def test_gradescope_keys_without_colons_sids_and_shared_local_parts(tmp_path):
    export = tmp_path / "export"
    write(export / "submission_metadata.yml", """\
submission_1:
  submitters:
  - {name: Ann One, email: ann@a.edu}
submission_2:
  submitters:
  - {name: Ann Two, email: ann@b.edu}
submission_3:
  submitters:
  - {name: No Email, sid: 98765}
""")
    for number in (1, 2, 3):
        write(export / f"submission_{number}" / "predict.py")
    entries = by_id(discover(export))
    assert set(entries) == {"ann_submission_1", "ann_submission_2", "98765"}
    assert entries["ann_submission_2"].name == "Ann Two" and entries["98765"].lms_id == "98765"
    assert any("also named ann" in n for n in entries["ann_submission_1"].notes)
    assert not any(e.problem for e in entries.values())


# ------------------------------------------------------------------------------------------- flat downloads


def test_canvas_download_groups_files_by_student_with_late_and_repeated_uploads(tmp_path):
    for name, text in {"smithjohn_12345_67890_rnn_scratch.py": "john scratch",
                       "smithjohn_12345_67891_predict.py": "john predict",
                       "doejane_LATE_222_333_rnn_scratch.py": "jane first",
                       "doejane_LATE_222_334_rnn_scratch-1.py": "jane second",
                       "doejane_LATE_222_335_report.pdf": "%PDF"}.items():
        write(tmp_path / name, text)
    write(tmp_path / "grades.csv", "x")
    found = discover(tmp_path)
    assert found.layout == "flat" and "Canvas" in found.description
    assert found.ignored == ("grades.csv",)
    entries = by_id(found)
    assert set(entries) == {"smithjohn_12345", "doejane_222"}
    john, jane = entries["smithjohn_12345"], entries["doejane_222"]
    assert (john.kind, john.name, john.lms_id, len(john.paths)) == ("flat", "smithjohn", "12345", 2)
    assert staged_files(stage_one(tmp_path, john)) == {"predict.py": "john predict", "rnn_scratch.py": "john scratch"}
    staged = stage_one(tmp_path, jane)
    assert staged_files(staged) == {"rnn_scratch.py": "jane second"}
    assert any("late" in n.lower() for n in staged.notes)
    assert any("replaced by a later upload" in n for n in staged.notes)
    assert any("report.pdf" in n for n in staged.notes)


def test_canvas_upload_of_one_archive_stages_the_archive(tmp_path):
    make_zip(tmp_path / "smithjohn_12345_67890_hw.zip", {"hw/rnn_scratch.py": "zipped"})
    entry = discover(tmp_path).entries[0]
    assert entry.student == "smithjohn_12345"
    assert staged_files(stage_one(tmp_path / "out", entry)) == {"rnn_scratch.py": "zipped"}


def test_files_named_student_then_exercise_file_are_grouped_with_their_helpers(tmp_path):
    root = tmp_path / "subs"
    write(root / "alice_rnn_scratch.py", "a1")
    write(root / "alice_helpers.py", "a2")
    write(root / "bob_smith_predict.py", "b1")
    write(root / "notes.txt", "x")
    found = discover(root)
    assert found.layout == "flat" and "alice_rnn_scratch.py" in found.description
    entries = by_id(found)
    assert set(entries) == {"alice", "bob_smith"} and found.ignored == ("notes.txt",)
    assert staged_files(stage_one(tmp_path, entries["alice"])) == {"helpers.py": "a2", "rnn_scratch.py": "a1"}
    assert staged_files(stage_one(tmp_path, entries["bob_smith"])) == {"predict.py": "b1"}


def test_a_folder_of_single_files_that_mostly_fit_no_pattern_is_one_entry_per_file(tmp_path):
    for name in ("alice.py", "bob.py", "carol_rnn_scratch.py"):
        write(tmp_path / name)
    found = discover(tmp_path)
    assert found.layout == "entries"
    assert [e.student for e in found.entries] == ["alice", "bob", "carol_rnn_scratch"]


# ------------------------------------------------------------------------------------------- hostile archives


def zip_symlink() -> zipfile.ZipInfo:
    info = zipfile.ZipInfo("link.py")
    info.create_system = 3
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    return info


def tar_special(name: str, kind: bytes, linkname: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, linkname
    return info


@pytest.mark.parametrize("kind, members, offender", [
    ("zip", {"ok.py": "x", "../x.py": "escape"}, "../x.py"),
    ("zip", {"/abs.py": "escape", "ok.py": "x"}, "/abs.py"),
    ("zip", {"sub\\..\\..\\x.py": "escape"}, "sub\\..\\..\\x.py"),
    ("zip", {"ok.py": "x", zip_symlink(): "/etc/passwd"}, "link.py"),
    ("tar.gz", {"ok.py": "x", "../x.py": "escape"}, "../x.py"),
    ("tar.gz", {"/abs.py": "escape"}, "/abs.py"),
    ("tar.gz", {"ok.py": "x", tar_special("link.py", tarfile.SYMTYPE, "/etc/passwd"): None}, "link.py"),
    ("tar.gz", {"ok.py": "x", tar_special("hard.py", tarfile.LNKTYPE, "ok.py"): None}, "hard.py"),
    ("tar.gz", {tar_special("dev", tarfile.CHRTYPE): None, "ok.py": "x"}, "dev"),
    ("tar.gz", {tar_special("pipe.py", tarfile.FIFOTYPE): None}, "pipe.py"),
])
def test_an_unsafe_member_refuses_the_whole_archive_naming_it(tmp_path, kind, members, offender):
    root = tmp_path / "subs" / "deeper"
    path = make_zip(root / "alice.zip", members) if kind == "zip" else make_tar(root / "alice.tar.gz", members)
    staged = stage_one(tmp_path, discover(root).entries[0])
    assert (staged.status, staged.folder) == (staging.UNSAFE_ARCHIVE, None)
    assert f"'{offender}'" in staged.message and path.name in staged.message
    assert not any((tmp_path / "staged" / "alice").iterdir())
    assert not (root.parent / "x.py").exists() and not Path("/abs.py").exists()


def encrypted_zip(path: Path) -> Path:
    """A zip whose member says it is encrypted (the flag bit a password sets), in both headers."""
    raw = bytearray(make_zip(path, {"rnn_scratch.py": SOLUTION}).read_bytes())
    for signature, offset in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
        at = raw.index(signature) + offset
        raw[at] |= 0x1
    path.write_bytes(bytes(raw))
    return path


def corrupt(path: Path) -> Path:
    """The archive's magic number, then noise."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes((b"PK\x03\x04" if path.suffix == ".zip" else b"\x1f\x8b\x08") + os.urandom(300))
    return path


def truncated(path: Path) -> Path:
    make_tar(path, {"rnn_scratch.py": os.urandom(4000).hex()}) if path.name.endswith("gz") \
        else make_zip(path, {"rnn_scratch.py": os.urandom(4000).hex()})
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return path


@pytest.mark.parametrize("build, name, says", [
    (encrypted_zip, "alice.zip", "is password-protected; submit it without a password"),
    (corrupt, "alice.zip", "create it again"),
    (truncated, "alice.zip", "truncated or corrupt"),
    (truncated, "alice.tar.gz", "truncated or corrupt"),
    (corrupt, "alice.tgz", "not a valid tar archive"),
])
def test_a_broken_archive_is_bad_archive_with_what_to_do(tmp_path, build, name, says):
    build(tmp_path / "subs" / name)
    staged = stage_one(tmp_path, discover(tmp_path / "subs").entries[0])
    assert (staged.status, staged.folder) == (intake.BAD_ARCHIVE, None)
    assert says in staged.message and name in staged.message


@pytest.mark.parametrize("magic", [b"PK\x03\x04", b"PK\x05\x06", b"\x1f\x8b\x08", b"BZh9", b"\xfd7zXZ\x00", b""])
def test_garbage_after_any_magic_number_is_a_status_not_an_exception(tmp_path, magic):
    for number in range(8):
        path = tmp_path / "subs" / f"s{number}.tar.gz"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(magic + os.urandom(number * 97))
    for entry in discover(tmp_path / "subs").entries:
        assert stage_one(tmp_path, entry).status == intake.BAD_ARCHIVE
        assert len(fingerprint(entry)) == 64


def test_a_compression_bomb_is_too_large(tmp_path):
    zeros = b"\0" * (2 * staging.RATIO_FLOOR)
    make_zip(tmp_path / "subs" / "zipbomb.zip", {"ok.py": "x", "data.py": zeros})
    make_tar(tmp_path / "subs" / "tarbomb.tar.gz", {"ok.py": "x", "data.py": zeros})
    for entry in discover(tmp_path / "subs").entries:
        staged = stage_one(tmp_path, entry)
        assert (staged.status, staged.folder) == (staging.TOO_LARGE, None), entry.source
        assert "compression bomb" in staged.message and "submit only your .py files" in staged.message


@pytest.mark.parametrize("limit, value, says", [
    ("MAX_MEMBERS", 5, "more than 5 files"),
    ("TOTAL_LIMIT", 3000, "expands to"),
    ("ARCHIVE_LIMIT", 200, "archives that large are not graded"),
])
def test_archive_limits_are_too_large(tmp_path, monkeypatch, limit, value, says):
    members = {f"f{i}.py": os.urandom(400).hex() for i in range(8)}
    make_zip(tmp_path / "subs" / "alice.zip", members)
    make_tar(tmp_path / "subs" / "bob.tar.gz", members)
    monkeypatch.setattr(staging, limit, value)
    for entry in discover(tmp_path / "subs").entries:
        staged = stage_one(tmp_path, entry)
        assert (staged.status, staged.folder) == (staging.TOO_LARGE, None), entry.source
        assert says in staged.message


def test_files_over_the_size_limit_are_left_out_with_a_note(tmp_path, monkeypatch):
    monkeypatch.setattr(loading, "FILE_LIMIT", 100)  # the limit's one home: loading.size_limit
    root = tmp_path / "subs"
    write(root / "alice" / "rnn_scratch.py", "small")
    write(root / "alice" / "huge.py", "#" * 500)
    make_zip(root / "bob.zip", {"huge.py": "#" * 500})
    write(root / "carol.py", "#" * 500)
    found = by_id(discover(root))
    alice = stage_one(tmp_path, found["alice"])
    assert staged_files(alice) == {"rnn_scratch.py": "small"} and any("huge.py is 500 bytes" in n for n in alice.notes)
    for student in ("bob", "carol"):
        staged = stage_one(tmp_path, found[student])
        assert (staged.status, staged.folder) == (staging.TOO_LARGE, None) and "500 bytes" in staged.message


def test_a_folder_with_too_many_files_is_too_large(tmp_path, monkeypatch):
    monkeypatch.setattr(staging, "MAX_MEMBERS", 5)
    for number in range(8):
        write(tmp_path / "subs" / "alice" / "data" / f"{number}.csv", "1")
    staged = stage_one(tmp_path, discover(tmp_path / "subs").entries[0])
    assert staged.status == staging.TOO_LARGE and "virtual environment" in staged.message


# ------------------------------------------------------------------------------------------- fingerprints


def test_fingerprints_change_with_the_bytes_and_only_with_them(tmp_path):
    root = tmp_path / "subs"
    solution = write(root / "alice" / "rnn_scratch.py", "v1")
    archive = make_zip(root / "bob.zip", {"rnn_scratch.py": "v1"})
    single = write(root / "carol.py", "v1")
    before = {e.student: fingerprint(e) for e in discover(root).entries}
    assert len(set(before.values())) == 3 and all(len(h) == 64 for h in before.values())

    os.utime(solution, (1, 1))  # times are not content
    assert {e.student: fingerprint(e) for e in discover(root).entries} == before

    solution.write_text("v2")
    archive.write_bytes(make_zip(tmp_path / "other.zip", {"rnn_scratch.py": "v2"}).read_bytes())
    single.write_text("v2")
    after = {e.student: fingerprint(e) for e in discover(root).entries}
    assert all(after[s] != before[s] for s in before)

    write(root / "alice" / "notes" / "todo.txt", "new file")
    assert fingerprint(by_id(discover(root))["alice"]) != after["alice"]


def test_a_link_is_fingerprinted_by_its_text_not_its_target(tmp_path):
    root = tmp_path / "subs"
    target = write(tmp_path / "target.py", "one")
    write(root / "alice" / "rnn_scratch.py", "mine")
    (root / "alice" / "helper.py").symlink_to(target)
    before = fingerprint(discover(root).entries[0])
    target.write_text("two")
    assert fingerprint(discover(root).entries[0]) == before
    (root / "alice" / "helper.py").unlink()
    (root / "alice" / "helper.py").symlink_to(tmp_path / "elsewhere.py")
    assert fingerprint(discover(root).entries[0]) != before


def test_a_flat_students_fingerprint_covers_only_their_files(tmp_path):
    john = write(tmp_path / "smithjohn_1_10_rnn_scratch.py", "v1")
    write(tmp_path / "doejane_2_20_rnn_scratch.py", "v1")
    before = {e.student: fingerprint(e) for e in discover(tmp_path).entries}
    john.write_text("v2")
    after = {e.student: fingerprint(e) for e in discover(tmp_path).entries}
    assert after["smithjohn_1"] != before["smithjohn_1"] and after["doejane_2"] == before["doejane_2"]


def test_hidden_folders_and_caches_are_neither_staged_nor_let_to_hide_a_change(tmp_path, monkeypatch):
    monkeypatch.setattr(staging, "MAX_MEMBERS", 20)
    root = tmp_path / "subs"
    solution = write(root / "alice" / "rnn_scratch.py", "v1")
    for number in range(30):  # sorted before the solution, and more than the walk looks at
        write(root / "alice" / ".venv" / f"{number}.py", "installed")
    write(root / "alice" / ".ipynb_checkpoints" / "rnn_scratch-checkpoint.py", "old")
    write(root / "alice" / "__pycache__" / "cached.py", "cache")
    entry = discover(root).entries[0]
    staged = stage_one(tmp_path, entry)
    assert staged.status is None and staged_files(staged) == {"rnn_scratch.py": "v1"}
    before = fingerprint(entry)
    solution.write_text("v2")
    assert fingerprint(entry) != before


def test_an_entry_gone_before_staging_is_unreadable(tmp_path):
    root = tmp_path / "subs"
    make_zip(root / "alice.zip", {"rnn_scratch.py": "x"})
    write(root / "bob" / "rnn_scratch.py")
    found = by_id(discover(root))
    (root / "alice.zip").unlink()
    (root / "bob" / "rnn_scratch.py").unlink()
    (root / "bob").rmdir()
    for student in ("alice", "bob"):
        staged = stage_one(tmp_path, found[student])
        assert (staged.status, staged.folder) == (intake.UNREADABLE, None) and "cannot be read" in staged.message
        assert len(fingerprint(found[student])) == 64


def test_staged_folders_are_what_the_engine_reads(tmp_path):
    from grader.judge.loading import read_submission

    root = tmp_path / "subs"
    make_tar(root / "alice.tar.gz", {"./alice/" + "long_" * 30 + ".py": "# long\n", "./alice/predict.py": SOLUTION})
    staged = stage_one(tmp_path, discover(root).entries[0])
    files, problems = read_submission(staged.folder)
    assert files == {"long_" * 30 + ".py": "# long\n", "predict.py": SOLUTION} and problems == []


def test_a_member_whose_compressed_bytes_are_damaged_is_bad_archive(tmp_path):
    path = make_zip(tmp_path / "subs" / "alice.zip", {"rnn_scratch.py": os.urandom(3000).hex()})
    raw = bytearray(path.read_bytes())
    start = raw.index(b"rnn_scratch.py") + len("rnn_scratch.py")  # the local header's name, then the data
    raw[start + 100: start + 400] = os.urandom(300)
    path.write_bytes(bytes(raw))
    staged = stage_one(tmp_path, discover(tmp_path / "subs").entries[0])
    assert (staged.status, staged.folder) == (intake.BAD_ARCHIVE, None)
    assert "alice.zip" in staged.message and "create the archive again" in staged.message


def test_a_notebook_over_the_module_limit_in_a_tar_archive_is_staged_whole(tmp_path):
    # notebooks carry their outputs: up to the notebook limit, read whole from a tar as from a zip or folder
    notebook = json.dumps({"cells": [{"cell_type": "code", "source": "x = 1", "metadata": {},
                                      "outputs": [{"output_type": "stream", "name": "stdout",
                                                   "text": os.urandom(loading.FILE_LIMIT // 2 + 1000).hex()}],
                                      "execution_count": 1}],
                           "metadata": {}, "nbformat": 4, "nbformat_minor": 5})
    make_tar(tmp_path / "subs" / "alice.tar.gz", {"rnn_scratch.ipynb": notebook})
    staged = stage_one(tmp_path, by_id(discover(tmp_path / "subs"))["alice"])
    assert staged_files(staged) == {"rnn_scratch.ipynb": notebook}
