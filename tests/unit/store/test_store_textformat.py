"""The export format: exact text, round trips of every type, clear errors with line numbers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from store_helpers import BASE, keys, odd_text, values

from appvirt.store import ImportFormatError, IsAKey, NotAKey, Store, Value
from appvirt.store.textformat import Section, format_sections, parse, sections_to_json

sections = st.lists(st.builds(
    Section,
    path=st.one_of(keys, st.lists(odd_text.filter(lambda s: s and s not in (".", "..")
                                                  and not any(c < " " or "\x7f" <= c <= "\x9f"
                                                              for c in s))
                                  .map(lambda s: s.replace("/", "|")), min_size=1, max_size=3)
                   .map("/".join)),
    deleted=st.just(False),
    opaque=st.sampled_from([None, True]),
    values=st.lists(st.tuples(st.sampled_from(["x", "y", 'q"uote', "back\\slash", "]", "-"]),
                              st.one_of(st.none(), values)), max_size=4, unique_by=lambda t: t[0])
    .map(tuple)), max_size=5)


@settings(max_examples=300, deadline=None)
@given(sections)
def test_text_round_trip(secs: list[Section]) -> None:
    text = format_sections(secs, layer="writable")
    assert parse(text) == secs


@settings(max_examples=100, deadline=None)
@given(sections)
def test_json_round_trip(secs: list[Section]) -> None:
    doc = json.dumps(sections_to_json(secs, layer="writable"))
    back = parse(doc)
    assert [(s.path, s.deleted, bool(s.opaque), s.values) for s in back] == \
        [(s.path, s.deleted, bool(s.opaque), s.values) for s in secs]


def test_deleted_sections_round_trip() -> None:
    secs = [Section("-dash/x"), Section("a", deleted=True), Section("-b", deleted=True),
            Section("a]b\\c", opaque=True)]
    text = format_sections(secs, layer="writable")
    assert "[-\\-b]" in text and "[\\-dash/x]" in text and "[a\\]b\\\\c] opaque" in text
    assert parse(text) == secs


def test_exact_text(store: Store) -> None:
    store.set("app/s", "str", Value.string('say "hi"\n\ttab\\ \u200b'))
    store.set("app/s", "int", Value.integer(-42))
    store.set("app/s", "bin", Value.binary(b"\x00\xff\x10"))
    store.set("app/s", "list", Value.multi(["a,b", "", "c"]))
    store.set("app/s", "empty", Value.multi([]))
    store.set("app/s", "nothing", Value.string(""))
    store.set("app/s", "nobytes", Value.binary(b""))
    store.mark_opaque("app/s")
    assert store.export_text() == (
        "appvirt-registry 1\n"
        "; layer: writable\n"
        "[app]\n"
        "[app/s] opaque\n"
        '"bin"=binary:00ff10\n'
        '"empty"=multi:\n'
        '"int"=integer:-42\n'
        '"list"=multi:"a,b","","c"\n'
        '"nobytes"=binary:\n'
        '"nothing"=""\n'
        '"str"="say \\"hi\\"\\n\\ttab\\\\ \\u{200b}"\n')


def test_import_into_fresh_app_reproduces_the_store(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    a = Store.open(tmp_path / "a", base=BASE)
    a.set("app/settings", "theme", Value.string("light"))
    a.delete_value("app/settings", "retries")
    a.delete_key("app/settings/plugins/spell", recursive=True)
    a.set("app/settings/plugins/spell", "enabled", Value.integer(5))   # recreated: opaque
    a.delete_key("machine", recursive=True)
    a.mark_opaque("app/settings/plugins")
    a.set("app/new", "blob", Value.binary(b"\x00\n\xff"))
    text = a.export_text()
    (tmp_path / "b").mkdir()
    b = Store.open(tmp_path / "b", base=BASE)
    summary = b.import_text(text)
    assert (summary.deleted_keys, summary.deleted_values) == (1, 1)
    assert b.export_text() == text
    assert b.view() == a.view()
    assert b.diff() == a.diff()
    # Both keep behaving alike: un-marking the opaque key shows the same base content again.
    a.mark_opaque("app/settings/plugins", False)
    b.mark_opaque("app/settings/plugins", False)
    assert b.view() == a.view()
    a.close()
    b.close()


def test_merged_export_reproduces_the_view_without_the_base(tmp_path: Path) -> None:
    for d in "ab":
        (tmp_path / d).mkdir()
    a = Store.open(tmp_path / "a", base=BASE)
    a.set("app/settings", "theme", Value.string("light"))
    a.delete_key("app/settings/plugins", recursive=True)
    b = Store.open(tmp_path / "b")
    b.import_text(a.export_text(merged=True))
    assert b.view() == a.view()
    assert b.get("machine/uts", "hostname") == Value.string("base-host")
    a.close()
    b.close()


def test_import_merges_or_replaces(store: Store) -> None:
    store.set("app", "keep", Value.integer(1))
    text = "appvirt-registry 1\n[app]\n\"new\"=integer:2\n"
    store.import_text(text)
    assert [v.name for v in store.list("app").values] == ["keep", "new"]
    store.import_text(text, replace=True)
    assert [v.name for v in store.list("app").values] == ["new"]


def test_import_is_all_or_nothing(store: Store) -> None:
    store.set("app", "x", Value.integer(1))
    with pytest.raises(IsAKey):
        store.import_text('appvirt-registry 1\n[app]\n"x"=integer:2\n[app/y]\n[app]\n"y"=""\n')
    assert store.get("app", "x") == Value.integer(1)
    assert not store.exists("app/y")
    with pytest.raises(NotAKey):
        store.import_text('appvirt-registry 1\n[app]\n"x"=integer:2\n[app/x/sub]\n')
    assert store.get("app", "x") == Value.integer(1)


def test_comments_blank_lines_crlf_and_bom(store: Store) -> None:
    store.import_text("\ufeff; exported by hand\r\nappvirt-registry 1\r\n\r\n# comment\r\n"
                      "[app]  \r\n  \"a\"=\"x\"  \r\n")
    assert store.get("app", "a") == Value.string("x")


@pytest.mark.parametrize("text,line,message", [
    ("", None, "empty file"),
    ("REGEDIT4\n", 1, "not an appvirt registry export"),
    ("appvirt-registry 2\n", 1, "unsupported format version"),
    ("appvirt-registry 1\n\"x\"=\"y\"\n", 2, "must follow a [key] line"),
    ("appvirt-registry 1\n[app\n", 2, "missing closing ']'"),
    ("appvirt-registry 1\n[app] shiny\n", 2, "unexpected 'shiny'"),
    ("appvirt-registry 1\n[a//b]\n", 2, "empty component"),
    ("appvirt-registry 1\n[-app]\n\"x\"=\"y\"\n", 3, "deleted key"),
    ("appvirt-registry 1\n[app]\n\"x\"=integer:12a\n", 3, "not a decimal integer"),
    ("appvirt-registry 1\n[app]\n\"x\"=integer:99999999999999999999\n", 3, "64-bit"),
    ("appvirt-registry 1\n[app]\n\"x\"=binary:abc\n", 3, "not hex bytes"),
    ("appvirt-registry 1\n[app]\n\"x\"=\"a\\q\"\n", 3, "unknown escape"),
    ("appvirt-registry 1\n[app]\n\"x\"=\"a\" junk\n", 3, "unexpected text"),
    ("appvirt-registry 1\n[app]\n\"x\"=dword:1\n", 3, "unknown value syntax"),
    ("appvirt-registry 1\n[app]\n\"x\"=multi:\"a\" \"b\"\n", 3, "expected ','"),
    ("appvirt-registry 1\n[app]\n\"x\"=multi:\"a\\nb\"\n", 3, "newline"),
    ("appvirt-registry 1\n[app]\n\"x\"=\"a\\u{0}\"\n", 3, "NUL"),
    ("appvirt-registry 1\n[app]\n\"..\"=\"a\"\n", 3, "reserved"),
    ("appvirt-registry 1\n[app]\nx=\"a\"\n", 3, "expected a quoted string"),
    ("{\"format\": \"other\"}", None, "not an appvirt registry export"),
    ("{\"format\": \"appvirt-registry\", \"version\": 1, \"keys\": [{}]}", None, "malformed"),
])
def test_parse_errors_name_the_line(text: str, line: int | None, message: str) -> None:
    with pytest.raises(ImportFormatError) as info:
        parse(text, source="f.reg")
    assert message in info.value.message
    assert info.value.line == line
    assert info.value.message.startswith("f.reg:" + (f"{line}:" if line else ""))
    assert "\n" not in info.value.message
