"""`appvirt reg APP ...`: output, JSON, one-line errors and exit statuses."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from store_helpers import BASE

from appvirt.state import app_dir, ensure_app_dir
from appvirt.store import Store, Value
from appvirt.store.cli import reg


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("APPVIRT_HOME", str(tmp_path))
    return tmp_path


@pytest.fixture
def app(home: Path) -> str:
    """An app whose sandbox already ran once with a policy (base remembered)."""
    d = ensure_app_dir(app_dir("demo"))
    Store.open(d, base=BASE).close()
    return "demo"


def run(*args: str, input: str | None = None) -> Result:
    return CliRunner().invoke(reg, list(args), input=input)


def one_line_error(r: Result) -> str:
    assert r.stdout == ""
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("appvirt: "), r.stderr
    assert "Traceback" not in r.output
    return lines[0]


def test_ls_get_set_rm(app: str) -> None:
    assert run(app, "set", "app/settings", "theme", "light").exit_code == 0
    assert run(app, "set", "app/settings", "count", "12").exit_code == 0
    assert run(app, "set", "--type", "multi", "app/settings", "list", "a b", "c").exit_code == 0
    assert run(app, "set", "--type", "binary", "app/settings", "blob", "00:ff").exit_code == 0
    assert run(app, "set", "--type", "string", "app/settings", "num", "12").exit_code == 0
    r = run(app, "get", "app/settings", "theme")
    assert (r.exit_code, r.stdout) == (0, "light\n")
    assert run(app, "get", "app/settings", "list").stdout == "a b\nc\n"
    assert run(app, "get", "app/settings", "blob").stdout == "00ff\n"
    r = run(app, "get", "app/settings", "count", "--json")
    doc = json.loads(r.stdout)
    assert (doc["key"], doc["name"], doc["type"], doc["value"]) == \
        ("app/settings", "count", "integer", 12)
    assert json.loads(run(app, "get", "app/settings", "num", "--json").stdout)["type"] == "string"
    r = run(app, "ls", "app/settings", "--json")
    doc = json.loads(r.stdout)
    assert [s["name"] for s in doc["subkeys"]] == ["plugins"]
    assert {v["name"]: v["value"] for v in doc["values"]} == {
        "blob": "00ff", "count": 12, "list": ["a b", "c"], "num": "12", "retries": 3,
        "theme": "light"}
    r = run(app, "ls", "app/settings")
    assert r.exit_code == 0 and "theme" in r.stdout and "light" in r.stdout
    assert "plugins/" in r.stdout
    r = run(app, "ls", "-r", "--json", "app")
    assert [k["key"] for k in json.loads(r.stdout)["keys"]] == [
        "app", "app/settings", "app/settings/plugins", "app/settings/plugins/grammar",
        "app/settings/plugins/spell"]
    assert run(app, "rm", "app/settings", "theme").exit_code == 0
    assert run(app, "get", "app/settings", "theme").exit_code == 1
    assert run(app, "rm", "-r", "app/settings/plugins", "--json").exit_code == 0
    with Store.open(app_dir(app)) as s:
        assert not s.exists("app/settings/plugins")
        assert s.get("app/settings", "blob") == Value.binary(b"\x00\xff")


def test_set_key_and_opaque(app: str) -> None:
    r = run(app, "set", "app/settings/plugins", "--opaque", "--json")
    assert json.loads(r.stdout) == {"key": "app/settings/plugins", "created": False,
                                    "opaque": True}
    assert json.loads(run(app, "ls", "app/settings/plugins", "--json").stdout)["subkeys"] == []
    assert run(app, "set", "app/new/key").exit_code == 0
    with Store.open(app_dir(app)) as s:
        assert s.exists("app/new/key")


@pytest.mark.parametrize("args,status,message", [
    (("get", "app/settings", "nope"), 1, "no value 'nope'"),
    (("get", "nokey", "x"), 1, "no key 'nokey'"),
    (("ls", "nokey"), 1, "no key 'nokey'"),
    (("rm", "app/settings", "nope"), 1, "no value 'nope'"),
    (("get", "a//b", "x"), 2, "empty component"),
    (("get", "app/settings", "theme", "--type", "integer"), 2, "expected integer"),
    (("set", "app/settings", "n", "--type", "integer", "12x"), 2, "not a decimal integer"),
    (("set", "app/settings", "n", "--type", "binary", "zz"), 2, "not hex bytes"),
    (("set", "app/settings", "n", "a", "b"), 2, "exactly one VALUE"),
    (("set", "machine/clock", "offset_ns", "soon"), 2, "holds integer"),
    (("set", "app/settings", "plugins", "x"), 2, "is a key"),
    (("rm", "app/settings"), 2, "not empty"),
    (("rm", "app/settings", "--json"), 2, "not empty"),
])
def test_errors_are_one_line_with_documented_status(app: str, args: tuple[str, ...],
                                                    status: int, message: str) -> None:
    r = run(app, *args)
    assert r.exit_code == status
    assert message in one_line_error(r)


def test_missing_app(home: Path) -> None:
    r = run("ghost", "ls")
    assert r.exit_code == 2
    assert "no app 'ghost'" in one_line_error(r)
    assert not (home / "apps" / "ghost").exists()
    r = run("bad/name", "ls")
    assert r.exit_code == 2 and "invalid app name" in one_line_error(r)


def test_corrupt_database_is_reported_and_kept(app: str) -> None:
    db = app_dir(app).store
    db.write_bytes(b"\x00garbage" * 512)
    for args in (("ls",), ("get", "app", "x"), ("set", "app", "x", "1"), ("export",), ("diff",)):
        r = run(app, *args)
        assert r.exit_code == 2
        assert "not a SQLite database" in one_line_error(r)
    assert db.read_bytes() == b"\x00garbage" * 512


def test_diff(app: str) -> None:
    r = run(app, "diff", "--json")
    assert (r.exit_code, json.loads(r.stdout)) == (0, {"changes": []})
    run(app, "set", "app/settings", "theme", "light")
    run(app, "rm", "app/settings", "retries")
    r = run(app, "diff", "--json")
    assert r.exit_code == 1
    assert json.loads(r.stdout)["changes"] == [
        {"change": "value removed", "key": "app/settings", "name": "retries",
         "old": {"type": "integer", "value": 3}, "new": None},
        {"change": "value changed", "key": "app/settings", "name": "theme",
         "old": {"type": "string", "value": "dark"}, "new": {"type": "string", "value": "light"}}]
    r = run(app, "diff")
    assert r.exit_code == 1 and "theme" in r.stdout and "light" in r.stdout


def test_export_then_import_into_a_fresh_app(app: str, home: Path) -> None:
    run(app, "set", "app/settings", "theme", 'odd "quoted"\\ value')
    run(app, "set", "--type", "multi", "app/settings", "list", "a,b", "", "é")
    run(app, "set", "--type", "binary", "app/settings", "blob", "")
    run(app, "rm", "-r", "machine")
    exported = run(app, "export")
    assert exported.exit_code == 0 and exported.stdout.startswith("appvirt-registry 1\n")
    out = home / "demo.reg"
    assert run(app, "export", "-o", str(out)).exit_code == 0
    assert out.read_text() == exported.stdout
    # A fresh app with the same policy: export, import, export again is the identity.
    fresh = ensure_app_dir(app_dir("fresh"))
    Store.open(fresh, base=BASE).close()
    r = run("fresh", "import", str(out), "--json")
    assert r.exit_code == 0
    assert json.loads(r.stdout) == {"keys": 2, "values": 3, "deleted_keys": 1,
                                    "deleted_values": 0}
    assert run("fresh", "export").stdout == exported.stdout
    assert run("fresh", "diff", "--json").stdout == run(app, "diff", "--json").stdout
    assert run("fresh", "ls", "-r", "--json").exit_code == 0
    # A brand-new app (no state directory yet, no policy): --create, and the merged view.
    merged = run(app, "export", "--merged").stdout
    r = run("brandnew", "import", "--create", "-", input=merged)
    assert r.exit_code == 0, r.output
    with Store.open(app_dir("brandnew")) as b, Store.open(app_dir(app)) as a:
        assert b.view() == a.view()


def test_export_json_and_import_of_json(app: str) -> None:
    run(app, "set", "app/x", "n", "5")
    doc = json.loads(run(app, "export", "--json").stdout)
    assert doc["format"] == "appvirt-registry"
    assert {"path": "app/x", "deleted": False, "opaque": False,
            "values": [{"name": "n", "type": "integer", "value": 5}]} in doc["keys"]
    ensure_app_dir(app_dir("other"))
    assert run("other", "import", "-", input=json.dumps(doc)).exit_code == 0
    assert run("other", "get", "app/x", "n").stdout == "5\n"


def test_import_errors(app: str, home: Path) -> None:
    bad = home / "bad.reg"
    bad.write_text("appvirt-registry 1\n[app]\n\"x\"=integer:nope\n")
    r = run(app, "import", str(bad))
    assert r.exit_code == 2
    assert f"{bad}:3: not a decimal integer" in one_line_error(r)
    bad.write_bytes(b"\xff\xfe")
    assert "not UTF-8" in one_line_error(run(app, "import", str(bad)))
    r = run(app, "import", str(home / "missing.reg"))
    assert r.exit_code == 2
    assert "cannot read" in one_line_error(r) and "No such file" in r.stderr


def test_through_the_root_command(app: str, monkeypatch: pytest.MonkeyPatch,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    """As the lead registers it: `cli.add_command(reg)`, run by appvirt.cli.main."""
    import click

    import appvirt.cli as root
    group = click.Group("appvirt", commands={"reg": reg})
    monkeypatch.setattr(root, "cli", group)
    assert root.main(["reg", app, "set", "app/x", "n", "7"]) == 0
    assert root.main(["reg", app, "get", "app/x", "n"]) == 0
    assert capsys.readouterr().out == "7\n"
    assert root.main(["reg", app, "get", "app/x", "missing"]) == 1
    assert root.main(["reg", app, "get", "a//b", "n"]) == 2
    assert root.main(["reg", app, "diff", "--json"]) == 1
    assert root.main(["reg", app, "get"]) == 2          # click usage error
    err = capsys.readouterr().err
    assert "appvirt: no value 'missing'" in err and "Traceback" not in err
