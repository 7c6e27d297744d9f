"""The `appvirt` executable's own parsing of plain `appvirt run` command lines agrees with
click's, and a run started that way ends as one started through click."""

from __future__ import annotations

import pytest
from hypothesis import given, settings, strategies as st

from appvirt.cli import cli, main as cli_main
from appvirt.cli_run import run
from appvirt.entry import main, plain_run


@pytest.fixture(scope="module")
def places(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("entry")
    (root / "policy.yaml").write_text("{}\n")
    (root / "dir").mkdir()
    return {"FILE": str(root / "policy.yaml"), "DIR": str(root / "dir"),
            "MISSING": str(root / "missing.yaml")}


_WORDS = ["--policy", "--policy=FILE", "--policy=DIR", "--policy=MISSING", "--policy=",
          "FILE", "DIR", "MISSING", "--app", "--app=box", "box", "--log", "--log=MISSING",
          "--log=DIR", "--stats", "--stats=1", "--", "-", "", "-h", "--help", "--pol", "-x",
          "--foo", "--version", "ls", "-l"]


def _click_params(args: list[str]) -> dict[str, object]:
    parent = cli.make_context("appvirt", ["run"])
    with run.make_context("run", list(args), parent=parent) as ctx:
        return dict(ctx.params)


@settings(max_examples=400)
@given(st.lists(st.sampled_from(_WORDS), max_size=7))
def test_a_plain_run_line_has_the_parameters_click_gives_it(places, words) -> None:
    args = [places.get(w, w) if "=" not in w else
            w.split("=")[0] + "=" + places.get(w.split("=")[1], w.split("=")[1])
            for w in words]
    params = plain_run(["run", *args])
    if params is not None:
        assert params == _click_params(args)


def test_plain_lines_are_the_usual_ones(places) -> None:
    assert plain_run(["run", "--policy", places["FILE"], "--stats", "--", "ls", "-l"]) == {
        "policy_file": places["FILE"], "app_name": None, "log_file": None, "stats": True,
        "command": ("ls", "-l")}
    assert plain_run(["run", "--app=box", "ls", "--", "x"])["command"] == ("ls", "--", "x")
    for other in (["run"], ["run", "--"], ["run", "-h"], ["run", "--policy", places["DIR"], "ls"],
                  ["run", "--stats", "--stats", "ls"], ["log"], ["--version"], []):
        assert plain_run(other) is None, other


def test_click_shell_completion_is_left_to_click(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("_APPVIRT_COMPLETE", "bash_complete")
    assert plain_run(["run", "ls"]) is None


@pytest.mark.parametrize("program, status", [("/nonexistent/prog", 127), ("/", 126),
                                             ("no-such-command-anywhere", 127)])
def test_a_failed_start_reads_the_same_both_ways(home, capsys, program: str,
                                                 status: int) -> None:
    assert main(["run", "--", program]) == status
    plain = capsys.readouterr()
    assert cli_main(["run", "--", program]) == status
    assert capsys.readouterr() == plain
    assert plain.err.startswith("appvirt: ") and plain.out == ""


def test_help_and_usage_errors_still_come_from_click(capsys) -> None:
    assert main(["run"]) == 2
    assert "Missing argument 'COMMAND...'" in capsys.readouterr().err
    assert main(["run", "--help"]) == 0
    assert "Run COMMAND in the sandbox" in capsys.readouterr().out


def test_an_interrupted_start_is_reported_as_click_reports_it(
        home, capsys, monkeypatch: pytest.MonkeyPatch) -> None:
    def interrupted(*args: object, **kw: object) -> int:
        raise KeyboardInterrupt
    import appvirt.run
    monkeypatch.setattr(appvirt.run, "run_command", interrupted)
    assert main(["run", "ls"]) == 130
    plain = capsys.readouterr()
    monkeypatch.setattr("appvirt.cli_run.run_command", interrupted)
    assert cli_main(["run", "ls"]) == 130
    assert capsys.readouterr() == plain == ("", "\nappvirt: aborted\n")


def _quick_exit(code: str) -> tuple[int, str]:
    """Run code, which ends with entry._exit_at_once, in a fresh interpreter: its status and
    output."""
    import subprocess
    import sys
    done = subprocess.run([sys.executable, "-c", "from appvirt.entry import _exit_at_once; "
                           + code], capture_output=True, text=True, timeout=60)
    return done.returncode, done.stdout


def test_the_quick_exit_runs_exit_handlers_and_flushes_what_they_print() -> None:
    assert _quick_exit("import atexit; atexit.register(lambda: print('handler')); "
                       "print('run', end=' '); _exit_at_once(7)") == (7, "run handler\n")


def test_the_quick_exit_waits_for_another_thread_as_the_usual_exit_does() -> None:
    assert _quick_exit("import threading, time; "
                       "threading.Thread(target=lambda: (time.sleep(0.2), print('thread')))"
                       ".start(); _exit_at_once(3)") == (3, "thread\n")
