"""The command line's contract: one line and a fixed exit status for bad input and signals."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ncrobust import atomic
from ncrobust.cli import main
from ncrobust.errors import DiskFull

FAST = ["--dataset", "digits", "--epochs", "1", "--device", "cpu", "--quiet"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--seed", "1e30"], "seed: 1e30 is out of range"),
        (["--device", "meta"], "unknown device 'meta'"),
        (["--device", "xpu"], "unknown device 'xpu'"),
        (["--norm", "l2", "--eps", "128"], "--eps 128/255"),
        (["--eps", "0.5"], "same grey image; if k/255 was meant, write --eps 0.5/255"),
        (["--epochs", "true"], "epochs: expected an integer"),
        (["--views", "clean,,pgd"], "views: empty item in 'clean,,pgd'"),
        (["--views", ""], "views must not be empty"),
        (["--splits", ""], "splits must not be empty"),
        (["--preset", "cifar11"], "unknown preset 'cifar11'; did you mean cifar10-l2"),
    ],
)
def test_bad_flags_are_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    out = tmp_path / "never"
    assert main(["train", *FAST, "--out", str(out), *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
    assert not out.exists()


def test_null_out_in_yaml_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("out: null\nepochs: 1\n")
    os.chdir(tmp_path)
    assert main(["train", "--config", str(config), *FAST]) == 2
    assert "out: expected a string, got null" in capsys.readouterr().err
    assert not (tmp_path / "None").exists()


def test_non_encodable_out_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    out = os.fsencode(tmp_path) + b"/caf\xe9-run"  # Latin-1 bytes: not a UTF-8 name
    env = {**os.environ, "PYTHONIOENCODING": "utf-8"}
    code = (
        "import os, sys; from ncrobust.cli import main; "
        "sys.exit(main(['train', '--dataset', 'digits', '--quiet', '--out', "
        "os.fsdecode(sys.argv[1].encode('latin-1'))]))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, out.decode("latin-1")],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 2, proc.stderr
    assert "cannot be encoded as a file name" in proc.stderr
    assert list(tmp_path.iterdir()) == []


def test_empty_out_or_resume_is_refused_not_defaulted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["train", *FAST, "--out", ""]) == 2
    assert "out must name a directory, got ''" in capsys.readouterr().err
    assert main(["train", "--resume", ""]) == 2  # an unset shell variable in --resume "$RUN"
    assert "--resume needs a run directory" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_a_yaml_syntax_error_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("epochs: [1\nseed: 2\n")
    assert main(["train", "--config", str(config), *FAST, "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is not valid YAML" in err[0] and "line 2, column 5" in err[0], err


def test_a_bad_fault_plan_is_refused_before_the_directory_is_claimed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    monkeypatch.setenv(atomic.FAULT_ENV, "explode@1")
    assert main(["train", *FAST, "--out", str(out)]) == 2
    assert "NCROBUST_FAULT='explode@1'" in capsys.readouterr().err
    assert not out.exists()


def test_ctrl_c_during_start_up_is_one_line_and_leaves_no_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    monkeypatch.setenv(atomic.FAULT_ENV, f"interrupt@{atomic.write_count() + 1}")  # manifest
    assert main(["train", *FAST, "--out", str(out)]) == 130
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("ncrobust train: interrupted"), err
    assert "during start-up" in err[0] and "after epoch -1" not in err[0], err
    assert "run the same command again" in err[0] and "--resume" not in err[0], err
    assert sorted(p.name for p in out.iterdir()) == [".lock"]  # no run, no temporary
    monkeypatch.delenv(atomic.FAULT_ENV)
    assert main(["train", "--resume", str(out)]) == 2  # not a run; a plain start is allowed


def test_sigterm_during_import_is_one_line_and_143(tmp_path: Path) -> None:
    code = (
        "import os, signal, sys; from ncrobust import cli; "
        "real = cli._load\n"
        "def slow(name):\n"
        "    os.kill(os.getpid(), signal.SIGTERM)\n"
        "    return real(name)\n"
        "cli._load = slow; sys.exit(cli.main(['train', '--help']))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False, cwd=tmp_path
    )
    assert proc.returncode == 143
    assert proc.stderr.strip().splitlines() == ["ncrobust train: terminated (SIGTERM)"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["train", "--eppchs", "3"], "unrecognized arguments: --eppchs 3; did you mean --epochs?"),
        (
            ["train", "--preset", "cifar10"],
            "did you mean cifar10-l2 or cifar100-l2 or cifar10-linf",
        ),
        (["trian"], "invalid choice: 'trian'"),
        (["demo", "--eps", "8/256x"], "argument --eps: invalid radius value: '8/256x'"),
        (["demo", "--eps", "0.9", "--out", "never"], "if k/255 was meant, write --eps 0.9/255"),
        (["measure"], "the following arguments are required: run"),
    ],
)
def test_usage_errors_are_one_line_with_the_closest_choice(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    os.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
    assert list(tmp_path.iterdir()) == []  # refused before anything is written


def test_bugs_keep_their_traceback_and_debug_shows_bad_input_too(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from ncrobust.commands import eval as eval_command
    from ncrobust.errors import UsageError

    monkeypatch.setattr(eval_command, "run", lambda args: [][0])  # an IndexError: a bug
    with pytest.raises(IndexError):
        main(["eval", "somewhere"])
    with pytest.raises(UsageError, match="unknown preset 'nope'"):
        main(["--debug", "train", "--preset", "nope"])
    monkeypatch.setenv("NCROBUST_DEBUG", "1")
    with pytest.raises(UsageError, match="did you mean --epochs"):
        main(["train", "--eppchs", "3"])


def test_every_flag_has_help_and_one_style_of_default() -> None:
    from ncrobust.cli import BENCHMARKS, COMMANDS, build_parser

    def chosen(parser: argparse.ArgumentParser, dest: str, name: str) -> argparse.ArgumentParser:
        (sub,) = [a for a in parser._actions if a.dest == dest]
        return sub.choices[name]  # type: ignore[index,no-any-return]

    commands = [(name, chosen(build_parser([name]), "command", name)) for name in COMMANDS]
    commands += [
        (f"bench {name}", chosen(chosen(build_parser(["bench", name]), "command", "bench"),
                                 "benchmark", name))
        for name in BENCHMARKS
    ]  # fmt: skip
    for name, command in commands:
        for action in command._actions:
            if action.dest == "help":
                continue
            where = f"{name} {'/'.join(action.option_strings) or action.dest}"
            assert action.help, f"{where} has no help text"
            text = action.help % {"default": action.default} if "%" in action.help else action.help
            assert text.count("(default") <= 1, f"{where}: {text}"
            assert "(default " not in text and "0.0313725" not in text, f"{where}: {text}"


def test_demo_reads_radii_as_train_does() -> None:
    from ncrobust.cli import build_parser

    args = build_parser(["demo"]).parse_args(["demo", "--eps", "8/255", "--targeted-eps", "0.3"])
    assert args.eps == pytest.approx(8 / 255) and args.targeted_eps == 0.3


@pytest.mark.parametrize(
    ("error", "status", "line"),
    [
        (KeyboardInterrupt(), 130, "ncrobust train: rank 1 of 2: interrupted"),
        (DiskFull("no space left writing x", Path("x"), 1), 1, "rank 1 of 2: stopped: no space"),
    ],
)
def test_every_line_of_a_torchrun_process_names_its_rank(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    error: BaseException,
    status: int,
    line: str,
) -> None:
    import ncrobust.commands.train as command

    def fail(args: object) -> int:
        raise error

    monkeypatch.setattr(command, "run", fail)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    assert main(["train"]) == status
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and line in err[0], err
