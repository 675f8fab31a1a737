"""Per-file problems are reported clearly and the rest of the submission is still graded."""

from __future__ import annotations

from conftest import REFERENCE, by_exercise, lost


def problems_of(report) -> dict:
    return {p.path: p.message for p in report.problems}


def test_reference_scores_full_marks(grading):
    report = grading(REFERENCE)
    assert report.points == report.max_points == 100
    assert not [p for p in report.problems if p.severity == "error"]


def test_syntax_error_costs_only_that_file(grading, submission):
    folder = submission({"grad_clipping.py": "from grader import hookimpl\n\n@hookimpl\ndef grad_clipping(net, theta)\n    pass\n"})
    report = grading(folder)
    assert "SyntaxError" in problems_of(report)["grad_clipping.py"]
    assert "at grad_clipping.py:4" in problems_of(report)["grad_clipping.py"]
    # file:line, which terminals make a link
    assert [p.where for p in report.problems if p.severity == "error"] == ["grad_clipping.py:4"]
    assert lost(report) == {"grad_clipping": 10}
    # an error, not "not implemented": the function is there, its file could not be imported
    assert all(c.status == "error" for c in by_exercise(report)["grad_clipping"].checks)
    # train_epoch.py imports the broken file; the reference stands in so train_epoch is still graded
    assert "grad_clipping.py, which could not be loaded" in problems_of(report)["train_epoch.py"]


def test_import_error_names_the_missing_module(grading, submission):
    folder = submission({"predict.py": "import d2l_missing_package\n" + (REFERENCE / "predict.py").read_text()})
    report = grading(folder)
    message = problems_of(report)["predict.py"]
    assert "ModuleNotFoundError" in message and "d2l_missing_package" in message
    assert lost(report) == {"predict": 10}


def test_typo_in_hook_name_suggests_the_right_one(grading, submission):
    source = (REFERENCE / "rnn_scratch.py").read_text().replace("def get_params(", "def get_param(")
    report = grading(submission({"rnn_scratch.py": source}))
    message = problems_of(report)["rnn_scratch.py"]
    assert "get_param" in message and "did you mean 'get_params'" in message
    assert set(lost(report)) == {"rnn_scratch"}
    params_checks = [c for c in by_exercise(report)["rnn_scratch"].checks if "get_params" in c.hooks]
    assert params_checks and all(c.status == "not_implemented" for c in params_checks)


def test_hook_implemented_twice_is_a_warning_and_one_is_graded(grading, submission):
    extra = (REFERENCE / "grad_clipping.py").read_text()
    report = grading(submission({"zz_clip_copy.py": extra}))
    assert "also implemented in grad_clipping.py" in problems_of(report)["zz_clip_copy.py"]
    assert report.points == 100
    assert report.implemented["grad_clipping"] == "grad_clipping.py"


def test_file_named_like_an_installed_module_is_not_loaded(grading, submission):
    report = grading(submission({"torch.py": "raise SystemExit('shadowing torch')\n"}))
    assert "same name as the installed module 'torch'" in problems_of(report)["torch.py"]
    assert report.points == 100


def test_wrong_number_of_arguments_is_reported(grading, submission):
    source = (REFERENCE / "grad_clipping.py").read_text().replace("def grad_clipping(net, theta):", "def grad_clipping(net):")
    report = grading(submission({"grad_clipping.py": source}))
    assert "must accept 2 arguments" in problems_of(report)["grad_clipping.py"]
    assert lost(report) == {"grad_clipping": 10}


def test_renamed_arguments_are_fine(grading, submission):
    source = (REFERENCE / "rnn_scratch.py").read_text().replace("def rnn(inputs, state, params):", "def rnn(X_seq, H_state, weights):")
    source = source.replace("W_xh, W_hh, b_h, W_hq, b_q = params", "W_xh, W_hh, b_h, W_hq, b_q = weights")
    source = source.replace("H, = state", "H, = H_state").replace("for X in inputs:", "for X in X_seq:")
    report = grading(submission({"rnn_scratch.py": source}))
    assert report.points == 100, [c.message for c in report.all_checks() if c.status != "passed"]


def test_all_hooks_in_one_file(grading, submission):
    others = ("rnn_scratch", "grad_clipping", "predict", "rnn_concise", "sine_wave", "gradient_flow")
    parts = [(REFERENCE / f"{name}.py").read_text() for name in others]
    train = (REFERENCE / "train_epoch.py").read_text()
    train = train.split("if __package__:")[0] + train.split("from grad_clipping import grad_clipping\n")[1]
    folder = submission({"solution.py": "\n".join(parts + [train]), "train_epoch.py": None,
                         **{f"{name}.py": None for name in others}})
    report = grading(folder)
    assert report.points == 100, [c.message for c in report.all_checks() if c.status != "passed"]
    assert set(report.implemented.values()) == {"solution.py"}


def test_skeletons_score_zero_with_not_implemented(grading):
    from conftest import REPO

    report = grading(REPO / "exercises")
    assert report.points == 0
    assert {c.status for c in report.all_checks()} == {"not_implemented"}
    assert all("not implemented" in c.message for c in report.all_checks())


def test_empty_hook_returning_none_fails_with_a_reason(grading, submission):
    source = "from grader import hookimpl\n\n@hookimpl\ndef init_rnn_state(batch_size, num_hiddens, device):\n    pass\n"
    rnn_source = (REFERENCE / "rnn_scratch.py").read_text().replace("@hookimpl\ndef init_rnn_state", "def init_rnn_state")
    report = grading(submission({"state.py": source, "rnn_scratch.py": rnn_source}))
    state_checks = [c for c in report.all_checks() if c.hooks == ("init_rnn_state",)]
    assert state_checks and all(c.status != "passed" for c in state_checks)
    assert any("NoneType" in c.message or "None" in c.message for c in state_checks)
    assert set(lost(report)) == {"rnn_scratch"}


def test_a_linked_file_is_not_followed(grading, submission, tmp_path):
    # a student's helper.py that links to any file the grading user can read must not bring it in
    secret = tmp_path / "instructor_notes.py"
    secret.write_text("SECRET = 'solution-key-5521'\n")
    folder = submission({"extra.py": "import helper\nprint(helper.SECRET)\n"})
    (folder / "helper.py").symlink_to(secret)
    report = grading(folder)
    assert "symbolic link" in problems_of(report)["helper.py"]
    assert "solution-key-5521" not in repr(report.to_dict())
    assert report.points == 100


def test_identical_replays_are_shared_and_different_ones_are_not():
    import torch

    from grader import replay, wire

    def tensor(values):
        array = torch.tensor(values).numpy()
        return wire.TensorData("float32", tuple(array.shape), "cpu", False, True, False, array)

    record = {"calls": [{"batch": [0, 1], "state": [tensor([0.0, 1.0])]}], "losses": [], "updates": []}
    same = {"calls": [{"batch": [0, 1], "state": [tensor([0.0, 1.0])]}], "losses": [], "updates": []}
    other = {"calls": [{"batch": [0, 1], "state": [tensor([0.0, 2.0])]}], "losses": [], "updates": []}
    args = (dict(batch_size=2), 1, False, False, 1.0, 4)
    assert replay._digest(record, *args) == replay._digest(same, *args)
    assert replay._digest(record, *args) != replay._digest(other, *args)
    assert replay._digest(record, *args) != replay._digest(record, dict(batch_size=3), *args[1:])
    assert replay._digest({"calls": [object()]}, *args) is None  # odd data is never remembered


def test_identical_results_are_judged_once_and_alike(runner, submission):
    # a class of similar submissions: the second grading reuses the verdicts of identical runs
    from grader.config import RunConfig
    from grader.judge import engine
    from grader.plugins import get_plugin_manager

    pm = get_plugin_manager()
    plan = engine.plan(pm, RunConfig())
    first = engine.grade(REFERENCE, RunConfig(), pm, runner, plan)
    remembered = dict(plan.verdicts)
    assert remembered
    second = engine.grade(REFERENCE, RunConfig(), pm, runner, plan)
    assert [(c.check_id, c.status, c.points, c.message) for c in second.all_checks()] == \
           [(c.check_id, c.status, c.points, c.message) for c in first.all_checks()]
    # only runs whose result differs run to run (train_epoch's measure their own speed) were judged again
    judged_again = {check for check, _ in plan.verdicts.keys() - remembered.keys()}
    assert all(check.startswith("train_epoch.") for check in judged_again)
    # a different result is judged afresh: a bug still costs its points
    buggy = (REFERENCE / "grad_clipping.py").read_text().replace("param.grad[:] *= theta / norm", "pass")
    report = engine.grade(submission({"grad_clipping.py": buggy}), RunConfig(), pm, runner, plan)
    assert lost(report).keys() == {"grad_clipping"}
