"""The ``sncn`` command (sncn.cli): its commands, help everywhere, one-line errors."""

from __future__ import annotations

import subprocess
import sys

import pytest

from sncn import cli


def test_usage_lists_every_command(capsys):
    assert cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    for name in ("reproduce", "runs", "make-c", "claims", "report"):
        assert f"  {name}" in out
    assert cli.main([]) == 2  # no command: the usage, on stderr
    assert "usage: sncn COMMAND" in capsys.readouterr().err


def test_unknown_command_names_the_valid_ones(capsys):
    assert cli.main(["make-cc"]) == 2
    err = capsys.readouterr().err
    assert "unknown command 'make-cc'" in err and "make-c" in err


@pytest.mark.parametrize("command", sorted(cli.COMMANDS))
def test_every_command_has_help_under_its_own_name(command, capsys):
    with pytest.raises(SystemExit) as done:
        cli.main([command, "--help"])
    assert done.value.code == 0
    assert f"usage: sncn {command}" in capsys.readouterr().out


def test_runs_lists_a_results_folder(tmp_path, capsys):
    (tmp_path / "quick" / "runs").mkdir(parents=True)
    assert cli.main(["runs", "--profile", "quick", "--results", str(tmp_path)]) == 0
    assert "runs" in capsys.readouterr().out.lower()


def test_errors_are_one_line_and_debug_shows_the_traceback(tmp_path, capsys, monkeypatch):
    args = ["report", "--profile", "quick", "--results", str(tmp_path), "--screenshot"]
    (tmp_path / "quick").mkdir()
    monkeypatch.setattr("sncn.report.BROWSERS", ("no-such-browser-sncn",))
    assert cli.main(args) == 1
    err = capsys.readouterr().err
    assert err.startswith("sncn report: error: no headless browser") and err.count("\n") == 1
    monkeypatch.setenv("SNCN_DEBUG", "1")
    with pytest.raises(FileNotFoundError):
        cli.main(args)


def test_python_dash_m_sncn_is_the_command():
    done = subprocess.run([sys.executable, "-m", "sncn", "--help"], capture_output=True, text=True)
    assert done.returncode == 0 and "usage: sncn COMMAND" in done.stdout
