"""lab/cli.py: the wrapper every entry point uses turns a user's error into one line and exit status 2."""

import sys

import pytest
from hydra.errors import InstantiationException

from mnist_lab import cli
from mnist_lab.config import compose
from mnist_lab.errors import NotFound, UserError


def run_main(main, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> tuple[int, str]:  # noqa: ANN001
    monkeypatch.setattr(sys, "argv", ["script.py", "a=1"])
    with pytest.raises(SystemExit) as exit_status:
        cli.run(main)
    return exit_status.value.code, capsys.readouterr().err


@pytest.mark.parametrize(
    ("error", "line"),
    [
        (
            UserError("optimizer.lr must be a number > 0, got -1"),
            "error: optimizer.lr must be a number > 0, got -1\n",
        ),
        (NotFound("ckpt=x: no checkpoint at x"), "error: ckpt=x: no checkpoint at x\n"),
        (
            PermissionError("[Errno 13] Permission denied: '/out.png'"),
            "error: [Errno 13] Permission denied: '/out.png'\n",
        ),
    ],
)
def test_a_user_error_is_one_line_and_exit_status_2(
    error: Exception, line: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    def main(argv: list[str]) -> int:
        raise error

    assert run_main(main, monkeypatch, capsys) == (2, line)


@pytest.mark.parametrize(
    ("override", "line"),
    [
        ("model=lenet7", "model=lenet7: no such option (did you mean model=lenet?); model is one of: lenet, lenet_res, resmlp"),
        ("optimizer=sgdd", "optimizer=sgdd: no such option (did you mean optimizer=sgd?); optimizer is one of: adam, adamw, sgd"),
        ("trainer.epocs=3", "trainer.epocs=3: trainer has no key epocs (did you mean trainer.epochs?)"),
        ("seeed=3", "seeed=3: the config has no key seeed (did you mean seed?)"),
        ("optimizer.betas=[0.7,0.9]", "optimizer.betas=[0.7,0.9]: optimizer has no key betas (its keys: _target_, _partial_, lr, weight_decay); to add it: +optimizer.betas=[0.7,0.9]"),
        ("trainer.epochs=[1", "no viable alternative at input '[1' (an override is key=value, e.g. trainer.epochs=3)"),
    ],
)  # fmt: skip
def test_hydras_errors_become_one_line_naming_the_option(
    override: str, line: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    code, err = run_main(lambda argv: compose(override) and 0, monkeypatch, capsys)
    assert (code, err) == (2, f"error: {line}\n")


def test_instantiate_errors_show_the_constructors_own_message(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    def main(argv: list[str]) -> int:
        try:
            raise ValueError("model.activation must be one of ['gelu', 'relu', 'tanh'], got 'swish'")
        except ValueError as cause:
            raise InstantiationException("Error in call to target 'models.lenet.LeNet': ...") from cause

    assert run_main(main, monkeypatch, capsys) == (
        2,
        "error: model.activation must be one of ['gelu', 'relu', 'tanh'], got 'swish'\n",
    )


def test_a_bug_keeps_its_traceback_instead_of_passing_for_a_bad_value(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    def main(argv: list[str]) -> int:
        return {"lr": 0.1}["learning_rate"]  # a KeyError of the code's own, not of the user's input

    monkeypatch.setattr(sys, "argv", ["script.py"])
    with pytest.raises(KeyError, match="learning_rate"):  # through to Python, which prints the traceback
        cli.run(main)
    assert capsys.readouterr().err == ""  # no "error: ..." line passing it off as the user's mistake


def test_the_scripts_own_exit_status_passes_through(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    assert run_main(lambda argv: 1 if argv == ["a=1"] else 0, monkeypatch, capsys) == (1, "")


def test_a_bug_is_not_hidden(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "argv", ["script.py"])
    with pytest.raises(ZeroDivisionError):
        cli.run(lambda argv: 1 // 0)
