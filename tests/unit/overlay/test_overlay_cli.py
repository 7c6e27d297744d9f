"""`appvirt overlay APP ls|diff|export|reset|commit` on apps whose lower root is a temporary
directory: output, JSON, exit statuses, one-line errors, and the host only ever changed by
commit (and only in the temporary directory)."""

from __future__ import annotations

import io
import json
import os
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from overlay_helpers import create_file, make_tree, mode_of, read, snapshot, view_tree, write_file

from appvirt.errors import StateDirError
from appvirt.overlay import Overlay
from appvirt.overlay.cli import overlay
from appvirt.state import app_dir

TREE = {
    "etc/hosts": b"127.0.0.1 localhost\n",
    "etc/motd": b"hello\nworld\n",
    "etc/app/conf": b"a=1\n",
    "etc/app/old": b"old\n",
    "var/log/syslog": b"log\n",
    "bin/tool": b"\x7fELF\x00binary",
}


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("APPVIRT_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


@pytest.fixture
def lower(tmp_path: Path) -> Path:
    make_tree(str(tmp_path / "lower"), TREE)
    return tmp_path / "lower"


@pytest.fixture
def app(home: Path, lower: Path) -> Iterator[str]:
    """An app that ran once over the temporary lower root and changed things."""
    with Overlay.open(app_dir("demo"), mode_of=mode_of(),
                      lower_root=os.fsencode(lower)) as ov:
        create_file(ov, b"/etc/new.conf", b"x=1\n")
        write_file(ov, b"/etc/motd", b"hello\nthere\n", append=False)
        ov.unlink(b"/var/log/syslog")
        ov.unlink(b"/etc/app/old")
        ov.link(b"/etc/new.conf", b"/etc/new.link")
        ov.symlink(b"new.conf", b"/etc/new.sym")
        ov.mkdir(b"/opt", 0o755)
        ov.mkdir(b"/opt/tool", 0o750)
        create_file(ov, b"/opt/tool/run", b"#!/bin/sh\n")
        ov.copy_up(b"/etc/hosts")                        # unchanged copy
        ov.mknod(b"/etc/sock", 0o140600)                 # a socket: not in a tar
    yield "demo"


def run(*args: str, input: str | None = None) -> Result:
    return CliRunner().invoke(overlay, list(args), input=input)


def one_line_error(r: Result) -> str:
    lines = [ln for ln in r.output.splitlines() if ln.startswith("appvirt:")]
    assert len(lines) == 1 and r.exit_code == 2, r.output
    assert "Traceback" not in r.output
    return lines[0]


def the_view(app: str) -> object:
    ov = Overlay(app_dir(app).upper, mode_of=mode_of(), lower_root=os.fsencode(
        json.loads((app_dir(app).root / "overlay.json").read_text())["lower_root"]))
    return view_tree(ov)


def test_ls_lists_the_upper_layer(app: str) -> None:
    r = run(app, "ls")
    assert r.exit_code == 0, r.output
    lines = r.output.splitlines()
    assert "A file    /etc/new.conf  (4 bytes)" in lines
    assert "M file    /etc/motd  (content, mtime)" in lines
    assert "D file    /var/log/syslog  (4 bytes)" in lines
    assert "= file    /etc/hosts" in lines
    assert "A dir     /opt/tool" in lines
    doc = json.loads(run(app, "ls", "--json").output)
    kinds = {e["path"]: e["kind"] for e in doc["entries"]}
    assert kinds["/etc/hosts"] == "unchanged" and kinds["/etc/new.sym"] == "added"
    assert doc["app"] == "demo" and doc["lower_root"].endswith("lower")


def test_diff_reports_changes_with_status_1(app: str) -> None:
    r = run(app, "diff")
    assert r.exit_code == 1, r.output
    assert "/etc/hosts" not in r.output and "/etc/new.conf" in r.output
    r = run(app, "diff", "/etc/motd", "--content")
    assert r.exit_code == 1
    assert "--- host/etc/motd" in r.output and "+++ app/etc/motd" in r.output
    assert "-world" in r.output and "+there" in r.output
    r = run(app, "diff", "/bin")
    assert r.exit_code == 0 and r.output == ""
    doc = json.loads(run(app, "diff", "--json", "/var/**", "/etc/new.conf", "--content").output)
    assert [(c["path"], c["kind"]) for c in doc["changes"]] == [
        ("/etc/new.conf", "added"), ("/var/log/syslog", "deleted")]
    assert doc["changes"][0]["diff"].startswith("--- /dev/null\n+++ app/etc/new.conf")
    assert one_line_error(run(app, "diff", "etc")).startswith("appvirt: 'etc'")


def test_diff_of_a_binary_file(app: str, lower: Path) -> None:
    with Overlay.open(app_dir(app), mode_of=mode_of()) as ov:
        write_file(ov, b"/bin/tool", b"\x7fELF\x00other", append=False)
    r = run(app, "diff", "--content", "/bin")
    assert r.exit_code == 1 and "Files differ (binary): /bin/tool" in r.output


def test_export_is_an_oci_layer(app: str, tmp_path: Path) -> None:
    out = tmp_path / "layer.tar"
    r = run(app, "export", "-o", str(out))
    assert r.exit_code == 0, r.output
    with tarfile.open(out) as tar:
        members = {m.name: m for m in tar.getmembers()}
        assert "var/log/.wh.syslog" in members and "etc/app/.wh.old" in members
        assert members["etc/new.sym"].issym() and members["etc/new.sym"].linkname == "new.conf"
        linked = [n for n in ("etc/new.conf", "etc/new.link") if members[n].islnk()]
        assert len(linked) == 1                          # the second name is a hard link
        assert members["opt/tool"].isdir() and members["opt/tool"].mode & 0o7777 == 0o750
        assert tar.extractfile("etc/motd").read() == b"hello\nthere\n"
        assert not any(".wh..wh..tmp" in n for n in members)
        assert "etc/sock" not in members                 # tar has no socket type
        names = list(members)
        assert names.index("opt") < names.index("opt/tool") < names.index("opt/tool/run")
    doc = json.loads(run(app, "export", "-o", str(out), "--json").output)
    assert doc["entries"] == len(members) and doc["skipped"] == ["/etc/sock"]
    assert "left out /etc/sock" in run(app, "export", "-o", str(out)).output


def test_export_to_stdout(app: str) -> None:
    r = CliRunner().invoke(overlay, [app, "export"])
    assert r.exit_code == 0
    with tarfile.open(fileobj=io.BytesIO(r.stdout_bytes), mode="r|") as tar:
        assert "etc/new.conf" in [m.name for m in tar]
    assert one_line_error(run(app, "export", "--json")).startswith("appvirt: --json needs")


def test_opaque_directories_are_exported_with_their_marker(app: str, tmp_path: Path) -> None:
    with Overlay.open(app_dir(app), mode_of=mode_of()) as ov:
        ov.unlink(b"/etc/app/conf")
        ov.rmdir(b"/etc/app")
        ov.mkdir(b"/etc/app", 0o755)
    out = tmp_path / "l.tar"
    assert run(app, "export", "-o", str(out)).exit_code == 0
    with tarfile.open(out) as tar:
        assert "etc/app/.wh..wh..opq" in tar.getnames()


def test_reset_asks_and_refuses_while_in_use(app: str, lower: Path) -> None:
    pristine = snapshot(str(lower))
    r = run(app, "reset", input="n\n")
    assert r.exit_code == 1 and "nothing changed" in r.output
    assert any(app_dir(app).upper.iterdir())
    r = run(app, "reset")                                # no answer at all: no
    assert r.exit_code == 1
    with Overlay.open(app_dir(app), mode_of=mode_of()):
        err = one_line_error(run(app, "reset", "--yes"))
        assert err == "appvirt: app demo is in use by another appvirt run"
    r = run(app, "reset", input="y\n")
    assert r.exit_code == 0 and "removed" in r.output
    assert list(app_dir(app).upper.iterdir()) == []
    assert snapshot(str(lower)) == pristine
    doc = json.loads(run(app, "reset", "--yes", "--json").output)
    assert doc == {"app": "demo", "reset": True, "removed": 0}


def test_commit_dry_run_changes_nothing(app: str, lower: Path) -> None:
    pristine = snapshot(str(lower))
    upper_before = snapshot(str(app_dir(app).upper))
    r = run(app, "commit", "--dry-run", "/etc", "/opt")
    assert r.exit_code == 0, r.output
    assert "would add /etc/new.conf" in r.output
    assert "would delete /etc/app/old" in r.output
    assert "would modify /etc/motd" in r.output
    assert snapshot(str(lower)) == pristine
    assert snapshot(str(app_dir(app).upper)) == upper_before
    doc = json.loads(run(app, "commit", "--dry-run", "--json", "/opt/tool/run").output)
    assert [(a["action"], a["path"], a["implied"]) for a in doc["actions"]] == [
        ("add", "/opt", True), ("add", "/opt/tool", True), ("add", "/opt/tool/run", False)]


def test_commit_applies_to_the_host_and_keeps_the_view(app: str, lower: Path) -> None:
    view = the_view(app)
    r = run(app, "commit", "/etc/motd", "/etc/app", "/opt", input="n\n")
    assert r.exit_code == 1 and (lower / "etc/motd").read_bytes() == b"hello\nworld\n"
    r = run(app, "commit", "--yes", "/etc/motd", "/etc/app", "/opt")
    assert r.exit_code == 0, r.output
    assert (lower / "etc/motd").read_bytes() == b"hello\nthere\n"
    assert not (lower / "etc/app/old").exists() and (lower / "etc/app/conf").exists()
    assert (lower / "opt/tool/run").read_bytes() == b"#!/bin/sh\n"
    assert (lower / "opt/tool").stat().st_mode & 0o7777 == 0o750
    assert (lower / "var/log/syslog").exists()            # not selected: untouched
    assert not (lower / "etc/new.conf").exists()
    assert the_view(app) == view                          # the program sees the same
    up = app_dir(app).upper
    assert not (up / "etc/motd").exists() and not (up / "etc/app/.wh.old").exists()
    assert not (up / "opt").exists()                      # fully committed: pruned
    left = {e["path"] for e in json.loads(run(app, "diff", "--json").output)["changes"]}
    assert left == {"/etc/new.conf", "/etc/new.link", "/etc/new.sym", "/etc/sock",
                    "/var/log/syslog"}


def test_commit_of_an_opaque_directory_replaces_its_content(app: str, lower: Path) -> None:
    with Overlay.open(app_dir(app), mode_of=mode_of()) as ov:
        ov.unlink(b"/etc/app/conf")
        ov.rmdir(b"/etc/app")
        ov.mkdir(b"/etc/app", 0o755)
        create_file(ov, b"/etc/app/fresh", b"new")
    view = the_view(app)
    r = run(app, "commit", "--yes", "--json", "/etc/app")
    assert r.exit_code == 0, r.output
    assert sorted(p.name for p in (lower / "etc/app").iterdir()) == ["fresh"]
    assert the_view(app) == view


def test_commit_errors(app: str, home: Path) -> None:
    assert one_line_error(run(app, "commit", "opt")).startswith("appvirt: 'opt'")
    r = run(app, "commit", "--yes", "/nothing/here")
    assert r.exit_code == 0 and "nothing to commit" in r.output
    assert run(app, "commit").exit_code == 2              # PATHS are required


def test_missing_and_invalid_apps_are_one_line(home: Path) -> None:
    err = one_line_error(run("nope", "ls"))
    assert err.startswith("appvirt: no app 'nope'")
    assert one_line_error(run("bad/name", "diff")).startswith("appvirt: invalid app name")


def test_open_records_the_lower_root_and_locks(home: Path, lower: Path) -> None:
    app = app_dir("locked")
    first = Overlay.open(app, mode_of=mode_of(), lower_root=os.fsencode(lower))
    try:
        with pytest.raises(StateDirError, match="in use by another appvirt run"):
            Overlay.open(app, mode_of=mode_of())
    finally:
        first.close()
    assert json.loads((app.root / "overlay.json").read_text())["lower_root"] == str(lower)
    with Overlay.open(app, mode_of=mode_of()) as again:   # the recorded root by default
        assert again.lower_root == os.fsencode(lower)
        assert read(again, b"/etc/hosts") == b"127.0.0.1 localhost\n"
        assert again.lstat(os.fsencode(app.root)) is None
    with pytest.raises(StateDirError, match="was made over"):
        Overlay.open(app, mode_of=mode_of(), lower_root=b"/")
