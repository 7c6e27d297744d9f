"""Policies: validation errors with file, line and key; defaults; glob rules."""

from __future__ import annotations

import subprocess
import sys

import pytest
from hypothesis import given, strategies as st

from appvirt.errors import PolicyError
from appvirt.policy import FileMode, load_policy, load_policy_text
from appvirt.globs import Glob, GlobError

# (policy text, line, key, words the message must contain)
MALFORMED = [
    ("files:\n  rulez: []\n", 2, "files.rulez", "unknown key 'rulez'"),
    ("log:\n  level: loud\n", 2, "log.level", "'loud' is not allowed"),
    ("log:\n  level: 3\n", 2, "log.level", "3 is not allowed"),
    ("files:\n  rules:\n    - path: /x\n      mode: rw\n", 4, "files.rules[0].mode", "'rw'"),
    ("files:\n  rules:\n    - path: /x\n", 3, "files.rules[0]", "'mode' is a required"),
    ("files:\n  rules:\n    - {path: 'etc/x', mode: hidden}\n", 3, "files.rules[0].path",
     "must be absolute"),
    ("files:\n  rules:\n    - {path: '/a/[bc', mode: hidden}\n", 3, "files.rules[0].path",
     "unclosed '['"),
    ("files:\n  rules: /etc\n", 2, "files.rules", "expected array"),
    ("version: 2\n", 1, "version", "expected 1"),
    ("files:\n  default: readonly\n  default: hidden\n", 3, "files.default", "duplicate key"),
    ("files: [\n", 2, "", "bad YAML"),
    ("app: 'bad name!'\n", 1, "app", "does not match"),
    ("- a\n- b\n", 1, "", "a policy is a mapping"),
]


@pytest.mark.parametrize("text, line, key, words", MALFORMED)
def test_malformed_policy_errors_name_line_and_key(text, line, key, words):
    with pytest.raises(PolicyError) as e:
        load_policy_text(text, "p.yaml")
    msg = str(e.value)
    assert msg.startswith(f"p.yaml:{line}: " + (f"{key}: " if key else ""))
    assert words in msg
    assert "\n" not in msg


@pytest.mark.parametrize("text, line, key, words", MALFORMED[:10])
def test_policy_check_cli_exits_2_with_one_line(tmp_path, text, line, key, words):
    f = tmp_path / "bad.yaml"
    f.write_text(text)
    r = subprocess.run([sys.executable, "-m", "appvirt", "policy", "check", str(f)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    assert r.stderr.count("\n") == 1
    assert r.stderr.startswith(f"appvirt: {f}:{line}: {key}: ")
    assert "Traceback" not in r.stderr


def test_defaults_are_filled_in():
    p = load_policy_text("{}", "p.yaml", default_app="demo")
    assert p.app == "demo"
    assert p.raw == {"version": 1, "log": {"level": "changes", "file": None},
                     "files": {"default": "overlay", "base_rules": True, "rules": []},
                     "network": {"preset": "open", "rules": []},
                     "processes": {"exec": [], "max": None, "proc": "all"}, "app": "demo"}
    assert p.files.mode_for(b"/dev/null") == (FileMode.PASSTHROUGH, "files.base[1]")
    assert p.files.mode_for(b"/etc/passwd") == (FileMode.OVERLAY, "files.default")


def test_the_registry_tree_is_writable_unless_a_later_rule_says_otherwise():
    p = load_policy_text("files:\n  default: readonly\n", "p.yaml")
    assert p.files.mode_for(b"/run/appvirt/registry/app/x") == (FileMode.PASSTHROUGH,
                                                                 "builtin:registry")
    assert p.files.mode_for(b"/run/appvirt/registry2") == (FileMode.READONLY, "files.default")
    p = load_policy_text("files:\n  rules:\n"
                         "    - {path: /run/appvirt/registry/app, mode: readonly}\n", "p.yaml")
    assert p.files.mode_for(b"/run/appvirt/registry/app/v") == (FileMode.READONLY,
                                                                "files.rules[0]")
    p = load_policy_text("registry: {path: '/etc/my[app]'}\nfiles: {default: hidden}\n",
                         "p.yaml")
    assert p.files.mode_for(b"/etc/my[app]/k") == (FileMode.PASSTHROUGH, "builtin:registry")
    assert p.files.mode_for(b"/etc/mya") == (FileMode.HIDDEN, "files.default")   # literal


@pytest.mark.parametrize("path", ["/proc/reg", "/sys", "/dev/x", "/a//b", "/a/./b", "/a/../b"])
def test_the_registry_cannot_be_mounted_anywhere(path):
    with pytest.raises(PolicyError, match="registry.path"):
        load_policy_text(f"registry: {{path: '{path}'}}\n", "p.yaml")


def test_later_rules_win():
    p = load_policy_text(
        "files:\n  default: hidden\n  rules:\n"
        "    - {path: /srv/**, mode: passthrough}\n"
        "    - {path: /srv/secret, mode: hidden}\n"
        "    - {path: /srv/secret/public.txt, mode: readonly}\n", "p.yaml")
    m = p.files.mode_for
    assert m(b"/srv/a/b") == (FileMode.PASSTHROUGH, "files.rules[0]")
    assert m(b"/srv/secret/x") == (FileMode.HIDDEN, "files.rules[1]")
    assert m(b"/srv/secret/public.txt") == (FileMode.READONLY, "files.rules[2]")
    assert m(b"/etc") == (FileMode.HIDDEN, "files.default")


def test_shipped_policies_are_valid():
    from pathlib import Path
    for f in sorted((Path(__file__).resolve().parents[2] / "policies").glob("*.yaml")):
        load_policy(f)


def test_missing_policy_file():
    with pytest.raises(PolicyError, match="no such policy file"):
        load_policy("/nonexistent/policy.yaml")


@pytest.mark.parametrize("pattern, path, hit", [
    ("/etc", b"/etc", True), ("/etc", b"/etc/x/y", True), ("/etc", b"/etcx", False),
    ("/etc/**", b"/etc", True), ("/home/*/.ssh", b"/home/a/.ssh/id", True),
    ("/home/*/.ssh", b"/home/a/b/.ssh", False), ("/a/**/b", b"/a/b", True),
    ("/a/**/b", b"/a/x/y/b/z", True), ("/a/**/b", b"/a/xb", False),
    ("/*.log", b"/x.log", True), ("/*.log", b"/d/x.log", False),
    ("/f?o", b"/foo", True), ("/f[a-c]", b"/fb", True), ("/f[!a-c]", b"/fb", False),
    ("/", b"/anything/at/all", True),
])
def test_globs(pattern, path, hit):
    assert Glob.of(pattern).matches(path) is hit


@pytest.mark.parametrize("bad", ["relative", "/a**", "/a/[x", "/a/../b", "/x]y"])
def test_bad_globs(bad):
    with pytest.raises(GlobError):
        Glob.of(bad)


_name = st.text(st.sampled_from("abcxyz.-_"), min_size=1, max_size=8).filter(
    lambda s: s not in (".", ".."))


@given(st.lists(_name, min_size=1, max_size=5), st.lists(_name, max_size=3))
def test_a_literal_rule_covers_its_path_and_everything_below(parts, below):
    path = "/" + "/".join(parts)
    g = Glob.of(path)
    assert g.matches(path.encode())
    assert g.matches(("/".join([path, *below])).encode())
    assert not g.matches((path + "x").encode())


def _cache_entries(home):
    d = home / "cache" / "policies"
    return sorted(d.iterdir()) if d.is_dir() else []


def test_a_policy_loaded_once_is_remembered_and_not_read_again(tmp_path, monkeypatch):
    from appvirt.policy import loader
    monkeypatch.setenv("APPVIRT_HOME", str(tmp_path))
    good = "app: cached\nfiles: {default: overlay, rules: [{path: /x/**, mode: hidden}]}\n"
    first = loader.load_policy_text(good, "p.yaml", remember_valid=True)
    assert len(_cache_entries(tmp_path)) == 1

    def neither_parsed_nor_validated():
        raise AssertionError("read again")
    monkeypatch.setattr(loader, "_validator", neither_parsed_nor_validated)
    monkeypatch.setattr(loader, "_policy_loader", neither_parsed_nor_validated)
    loader._loaded.clear()              # as in another process: the cache file alone
    again = loader.load_policy_text(good, "p.yaml", remember_valid=True)
    assert again == first and again.raw == first.raw
    # Without remember_valid, nothing is taken from the cache.
    with pytest.raises(AssertionError, match="read again"):
        loader.load_policy_text(good, "p.yaml")
    # The app name still comes from this load's file name when the policy names none.
    monkeypatch.undo()
    monkeypatch.setenv("APPVIRT_HOME", str(tmp_path))
    unnamed = "files: {default: overlay}\n"
    assert loader.load_policy_text(unnamed, "a.yaml", default_app="a",
                                   remember_valid=True).app == "a"
    assert loader.load_policy_text(unnamed, "b.yaml", default_app="b",
                                   remember_valid=True).app == "b"


def test_a_policy_built_once_is_built_again_only_in_another_process(tmp_path, monkeypatch):
    """What a warm server's runs find: the policy built, its source the file named now."""
    from appvirt.policy import loader
    monkeypatch.setenv("APPVIRT_HOME", str(tmp_path))
    text = "files: {default: overlay, rules: [{path: /x/**, mode: hidden}]}\n"
    first = loader.load_policy_text(text, "a/p.yaml", default_app="p", remember_valid=True)

    def not_again(*_args):
        raise AssertionError("built again")
    monkeypatch.setattr(loader, "_build", not_again)
    monkeypatch.setattr(loader, "_recall", not_again)
    assert loader.load_policy_text(text, "a/p.yaml", default_app="p",
                                   remember_valid=True) is first
    elsewhere = loader.load_policy_text(text, "b/p.yaml", default_app="p", remember_valid=True)
    assert elsewhere.source == "b/p.yaml" and elsewhere == first._replace(source="b/p.yaml")
    for other in [dict(default_app="q", remember_valid=True), dict(default_app="p")]:
        with pytest.raises(AssertionError, match="built again"):   # another name; no memory
            loader.load_policy_text(text, "a/p.yaml", **other)


def test_a_bad_policy_is_never_remembered(tmp_path, monkeypatch):
    from appvirt.policy import loader
    monkeypatch.setenv("APPVIRT_HOME", str(tmp_path))
    for bad in ("app: cached\nfiles: {default: sideways}\n",
                "files: {rules: [{path: '/a/[bc', mode: hidden}]}\n"):
        for _ in range(2):
            with pytest.raises(PolicyError):
                loader.load_policy_text(bad, "p.yaml", remember_valid=True)
    assert _cache_entries(tmp_path) == []


def test_the_cache_key_follows_the_text_and_the_schema(tmp_path, monkeypatch):
    from appvirt.policy import loader
    monkeypatch.setenv("APPVIRT_HOME", str(tmp_path))
    a, b = "app: one\n", "app: one \n"
    assert loader._cache_file(a).parent == tmp_path / "cache" / "policies"
    assert loader._cache_file(a) == loader._cache_file(a)
    assert loader._cache_file(a) != loader._cache_file(b)
    before = loader._cache_file(a)
    loader._SCHEMA["x-test"] = "another schema"
    loader._cache_salt.cache_clear()
    try:
        assert loader._cache_file(a) != before
    finally:
        del loader._SCHEMA["x-test"]
        loader._cache_salt.cache_clear()
    assert loader._cache_file(a) == before


@pytest.mark.parametrize("damage", [
    lambda raw: b"",
    lambda raw: b"not a digest\n{}",
    lambda raw: raw[:-5],                                           # torn
    lambda raw: raw.replace(b'"overlay"', b'"passthrough"'),         # changed after its digest
    lambda raw: raw.split(b"\n", 1)[1],                             # no digest line
])
def test_a_damaged_cache_entry_is_ignored_and_replaced(tmp_path, monkeypatch, damage):
    from appvirt.policy import loader
    monkeypatch.setenv("APPVIRT_HOME", str(tmp_path))
    text = "files: {default: overlay}\n"
    first = loader.load_policy_text(text, "p.yaml", remember_valid=True)
    [entry] = _cache_entries(tmp_path)
    good = entry.read_bytes()
    entry.write_bytes(damage(good))
    loader._loaded.clear()              # as in another process: the cache file alone
    again = loader.load_policy_text(text, "p.yaml", remember_valid=True)
    assert again == first and again.files.default is FileMode.OVERLAY
    assert entry.read_bytes() == good


def test_an_unwritable_cache_costs_only_time(tmp_path, monkeypatch):
    from appvirt.policy import loader
    monkeypatch.setenv("APPVIRT_HOME", str(tmp_path))
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / "policies").write_text("a file where the directory would be")
    text = "files: {default: overlay}\n"
    assert loader.load_policy_text(text, "p.yaml", remember_valid=True) == \
        loader.load_policy_text(text, "p.yaml")


def test_only_data_json_keeps_exactly_is_remembered():
    from appvirt.policy.loader import _json_exact
    assert _json_exact({"a": [1, "x", True, None, 1.5, {"b": []}]})
    for inexact in ({1: "x"}, {"a": (1,)}, {"a": b"x"}, {"a": float("nan")}, {"a": {2, 3}}):
        assert not _json_exact(inexact), inexact