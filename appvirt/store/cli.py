"""`appvirt reg APP ls|get|set|rm|export|import|diff`: the configuration store from the host.

Every command takes `--json` (one JSON document on stdout). Errors are one line on stderr,
"appvirt: MESSAGE", never a traceback, with these exit statuses (appvirt.errors.ExitStatus):

    0  OK        done; `diff`: no changes
    1  FAILURE   a negative answer: the key or value does not exist; `diff`: changes found
    2  USAGE     bad command line, invalid key or name, wrong type or bad value, limit
                 exceeded, missing app, malformed import file, corrupt or newer database,
                 database busy beyond the bounded wait, unreadable or unwritable file
"""

from __future__ import annotations

import datetime
import functools
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click
from rich.console import Console
from rich.table import Table
from rich.text import Text

from ..errors import AppvirtError, ExitStatus
from ..state import app_dir, ensure_app_dir
from . import wellknown
from .errors import InvalidValue, NoSuchApp, StoreError, StoreIOError, ValueNotFound
from .keys import ROOT
from .layers import Listing, ValueEntry
from .render import value_from_content
from .store import Store, iter_keys
from .values import Value, ValueType, parse_hex, parse_int64

F = TypeVar("F", bound=Callable[..., Any])
TYPE_NAMES = [t.value for t in ValueType]


def _fail(e: AppvirtError) -> None:
    click.echo(f"appvirt: {' '.join(e.message.splitlines())}", err=True)
    click.get_current_context().exit(int(e.exit_status))


def _reports_errors(fn: F) -> F:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except AppvirtError as e:
            _fail(e)
    return wrapper  # type: ignore[return-value]


def _open(ctx: click.Context, *, create: bool = False) -> Store:
    app = app_dir(ctx.obj["app"])
    if not app.root.is_dir():
        if not create:
            raise NoSuchApp(f"no app {app.name!r} (no state directory {app.root}); "
                             "run it once, or pass --create")
        ensure_app_dir(app)
    store = Store.open(app)
    ctx.call_on_close(store.close)
    return store


def _key(text: str) -> str:
    """Keys on the command line may have a leading or trailing '/'."""
    return text.strip("/")


def _emit(obj: Any) -> None:
    click.echo(json.dumps(obj, ensure_ascii=False, indent=2))


def _time(ns: int) -> str:
    return datetime.datetime.fromtimestamp(ns / 1e9).isoformat(sep=" ", timespec="seconds")


def _console() -> Console:
    return Console(file=sys.stdout, highlight=False, soft_wrap=False)


def _listing_json(listing: Listing) -> dict[str, Any]:
    k = listing.key
    return {"key": k.path, "opaque": k.opaque, "mtime_ns": k.mtime_ns,
            "subkeys": [{"name": s.name, "opaque": s.opaque, "mtime_ns": s.mtime_ns}
                        for s in listing.subkeys],
            "values": [_entry_json(v) for v in listing.values]}


def _entry_json(e: ValueEntry) -> dict[str, Any]:
    return {"name": e.name, **e.value.to_json(), "mtime_ns": e.mtime_ns}


json_option = click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")


@click.group(name="reg", context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("app")
@click.pass_context
def reg(ctx: click.Context, app: str) -> None:
    """Inspect and edit the configuration store (virtual registry) of APP.

    Keys are paths such as app/settings or machine/clock; values are typed (string, integer,
    binary, multi). Exit status: 0 ok, 1 not found or diff has changes, 2 error.
    """
    ctx.ensure_object(dict)
    ctx.obj["app"] = app


@reg.command("ls")
@click.argument("key", default=ROOT)
@click.option("-r", "--recursive", is_flag=True, help="List every key below KEY too.")
@json_option
@click.pass_context
@_reports_errors
def ls_cmd(ctx: click.Context, key: str, recursive: bool, as_json: bool) -> None:
    """List the subkeys and values of KEY (default: the root)."""
    store = _open(ctx)
    listings = list(iter_keys(store, _key(key))) if recursive else [store.list(_key(key))]
    if as_json:
        _emit({"keys": [_listing_json(x) for x in listings]} if recursive
              else _listing_json(listings[0]))
        return
    console = _console()
    for listing in listings:
        table = Table(title=f"{listing.key.path or '/'}" + (" (opaque)" if listing.key.opaque
                                                          else ""), title_justify="left")
        for col in ("name", "type", "value", "modified"):
            table.add_column(col, overflow="fold")
        for s in listing.subkeys:
            table.add_row(Text(s.name + "/"), "key" + (", opaque" if s.opaque else ""), "",
                          _time(s.mtime_ns))
        for v in listing.values:
            table.add_row(Text(v.name), v.value.type.value, Text(v.value.display()),
                          _time(v.mtime_ns))
        console.print(table)


@reg.command("get")
@click.argument("key")
@click.argument("name")
@click.option("--type", "vtype", type=click.Choice(TYPE_NAMES),
              help="Fail (status 2) unless the value has this type.")
@json_option
@click.pass_context
@_reports_errors
def get_cmd(ctx: click.Context, key: str, name: str, vtype: str | None, as_json: bool) -> None:
    """Print value NAME of KEY (binary as hex, lists one item per line)."""
    store = _open(ctx)
    if vtype is not None:
        value = store.get_typed(_key(key), name, ValueType(vtype))
        if value is None:
            raise ValueNotFound(f"no value {name!r} in key {_key(key)!r}")
        entry = ValueEntry(name, value, store.get_entry(_key(key), name).mtime_ns)
    else:
        entry = store.get_entry(_key(key), name)
    if as_json:
        _emit({"key": _key(key), **_entry_json(entry)})
        return
    v = entry.value
    if v.type is ValueType.MULTI:
        for item in v.data:  # type: ignore[union-attr]
            click.echo(item)
    elif v.type is ValueType.BINARY:
        click.echo(v.data.hex())  # type: ignore[union-attr]
    else:
        click.echo(str(v.data))


def _cli_value(store: Store, key: str, name: str, args: tuple[str, ...],
               vtype: ValueType | None) -> Value:
    if vtype is ValueType.MULTI:
        return Value.multi(args)
    if len(args) != 1:
        raise InvalidValue(f"give exactly one VALUE for {name!r} (got {len(args)}); "
                           "lists take --type multi")
    text = args[0]
    if vtype is None:
        existing = store.lookup(key, name)
        return value_from_content(text.encode(), existing.type if existing else None,
                                  fixed=wellknown.expected_type(key, name))
    if vtype is ValueType.STRING:
        return Value.string(text)
    if vtype is ValueType.INTEGER:
        return Value.integer(parse_int64(text))
    return Value.binary(parse_hex(text))


@reg.command("set")
@click.argument("key")
@click.argument("name", required=False)
@click.argument("values", nargs=-1)
@click.option("--type", "vtype", type=click.Choice(TYPE_NAMES),
              help="Value type; binary takes hex, multi takes one argument per item. Without "
                   "it, the typing rule of files written in the sandbox applies.")
@click.option("--opaque/--merged", default=None,
              help="Mark KEY opaque (the base's content no longer shows) or merged.")
@click.option("--create", is_flag=True, help="Create the app's state directory if missing.")
@json_option
@click.pass_context
@_reports_errors
def set_cmd(ctx: click.Context, key: str, name: str | None, values: tuple[str, ...],
            vtype: str | None, opaque: bool | None, create: bool, as_json: bool) -> None:
    """Set value NAME of KEY to VALUE..., or with no NAME create KEY."""
    store = _open(ctx, create=create)
    key = _key(key)
    out: dict[str, Any] = {"key": key}
    with store.batch():
        if name is None:
            if values or vtype:
                raise InvalidValue("give a value NAME before the VALUE")
            out["created"] = store.create_key(key)
        else:
            value = _cli_value(store, key, name, values, ValueType(vtype) if vtype else None)
            store.set(key, name, value)
            out.update({"name": name, **value.to_json()})
        if opaque is not None:
            store.mark_opaque(key, opaque)
            out["opaque"] = opaque
    if as_json:
        _emit(out)


@reg.command("rm")
@click.argument("key")
@click.argument("name", required=False)
@click.option("-r", "--recursive", is_flag=True, help="Delete KEY with everything below it.")
@json_option
@click.pass_context
@_reports_errors
def rm_cmd(ctx: click.Context, key: str, name: str | None, recursive: bool,
           as_json: bool) -> None:
    """Delete value NAME of KEY, or with no NAME the key itself (base keys and values are
    hidden by deletion markers; the base is never modified)."""
    store = _open(ctx)
    key = _key(key)
    if name is not None:
        store.delete_value(key, name)
    else:
        store.delete_key(key, recursive=recursive)
    if as_json:
        _emit({"deleted": "value" if name is not None else "key", "key": key, "name": name})


@reg.command("export")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path),
              help="Write to this file instead of stdout.")
@click.option("--merged", is_flag=True,
              help="Export everything the program sees (base included, no deletion markers) "
                   "instead of the writable layer.")
@json_option
@click.pass_context
@_reports_errors
def export_cmd(ctx: click.Context, output: Path | None, merged: bool, as_json: bool) -> None:
    """Write the app's writable layer in the documented text format (or JSON)."""
    store = _open(ctx)
    text = (json.dumps(store.export_json(merged=merged), ensure_ascii=False, indent=2) + "\n"
            if as_json else store.export_text(merged=merged))
    if output is None:
        click.echo(text, nl=False)
        return
    try:
        output.write_text(text, encoding="utf-8")
    except OSError as e:
        raise StoreIOError(f"cannot write {output}: {e.strerror}") from e


@reg.command("import")
@click.argument("file", type=click.Path(dir_okay=False, allow_dash=True, path_type=Path))
@click.option("--replace", is_flag=True, help="Empty the writable layer first (restore).")
@click.option("--create", is_flag=True, help="Create the app's state directory if missing.")
@json_option
@click.pass_context
@_reports_errors
def import_cmd(ctx: click.Context, file: Path, replace: bool, create: bool,
               as_json: bool) -> None:
    """Apply FILE (an export, text or JSON; '-' for stdin) to the writable layer, atomically."""
    source = "<stdin>" if str(file) == "-" else str(file)
    try:
        data = sys.stdin.buffer.read() if str(file) == "-" else file.read_bytes()
        text = data.decode("utf-8")
    except OSError as e:
        raise StoreIOError(f"cannot read {source}: {e.strerror}") from e
    except UnicodeDecodeError as e:
        raise StoreError(f"{source}: not UTF-8 text (byte {e.start})") from None
    store = _open(ctx, create=create)
    summary = store.import_text(text, replace=replace, source=source)
    if as_json:
        _emit({"keys": summary.keys, "values": summary.values,
               "deleted_keys": summary.deleted_keys, "deleted_values": summary.deleted_values})
    else:
        click.echo(f"imported {summary.keys} keys, {summary.values} values, "
                   f"{summary.deleted_keys} key and {summary.deleted_values} value deletions")


@reg.command("diff")
@json_option
@click.pass_context
@_reports_errors
def diff_cmd(ctx: click.Context, as_json: bool) -> None:
    """Show the app's changes against the base layer (status 1 when there are any)."""
    changes = _open(ctx).diff()
    if as_json:
        _emit({"changes": [c.to_json() for c in changes]})
    elif changes:
        table = Table(box=None)
        for col in ("", "key", "name", "base", "app"):
            table.add_column(col, overflow="fold")
        for c in changes:
            table.add_row(c.change.sign, Text(c.key), Text(c.name or ""),
                          Text(c.old.display() if c.old else ""),
                          Text(c.new.display() if c.new else ""))
        _console().print(table)
    if changes:
        click.get_current_context().exit(int(ExitStatus.FAILURE))


__all__ = ["reg"]
