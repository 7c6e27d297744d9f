"""`appvirt overlay APP ls|diff|export|reset|commit`: an app's overlay seen from the host.

Exit statuses (appvirt.errors.ExitStatus): 0 done, `diff` found no change; 1 `diff` found
changes, or a reset/commit was not confirmed; 2 an error (missing app, app in use, bad
pattern, unreadable or unwritable file), printed as one line "appvirt: MESSAGE".
"""

from __future__ import annotations

import difflib
import functools
import json
import os
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import click

from ..errors import AppvirtError, ExitStatus, StateDirError
from ..policy.model import FileMode
from ..state import AppDir, app_dir
from . import commit as commit_mod
from .appstate import is_in_use, read_lower_root
from .archive import export_upper
from .errors import ExportError, NoSuchApp
from .model import Change, ChangeKind, FileType
from .overlay import Overlay

F = TypeVar("F", bound=Callable[..., Any])
TEXT_LIMIT = 1 << 20          # --content shows files up to this size
_CODES = {ChangeKind.ADDED: "A", ChangeKind.MODIFIED: "M", ChangeKind.DELETED: "D",
          ChangeKind.UNCHANGED: "="}


def _all_overlay(_path: bytes) -> FileMode:
    return FileMode.OVERLAY


def _reports_errors(fn: F) -> F:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except AppvirtError as e:
            click.echo(f"appvirt: {' '.join(e.message.splitlines())}", err=True)
            click.get_current_context().exit(int(e.exit_status))
    return wrapper  # type: ignore[return-value]


def _app(ctx: click.Context) -> AppDir:
    app = app_dir(ctx.obj["app"])
    if not app.root.is_dir():
        raise NoSuchApp(f"no app {app.name!r} (no state directory {app.root})")
    return app


def _inspect(app: AppDir) -> Overlay:
    """A read-only look at the overlay: no lock, no recovery, works while the app runs."""
    return Overlay(app.upper, mode_of=_all_overlay, lower_root=read_lower_root(app),
                   hidden_host=(os.fsencode(app.root),), recover=False)


def show(g: bytes) -> str:
    return g.decode("utf-8", "backslashreplace")


def change_json(c: Change) -> dict[str, Any]:
    return {"path": os.fsdecode(c.guest), "kind": c.kind.value, "type": c.type.value,
            "size": c.size, "old_size": c.old_size, "opaque": c.opaque,
            "details": list(c.details)}


def change_line(c: Change) -> str:
    notes = []
    if c.type is FileType.FILE and c.kind is ChangeKind.MODIFIED and c.old_size != c.size:
        notes.append(f"{c.old_size} -> {c.size} bytes")
    elif c.type is FileType.FILE and c.kind in (ChangeKind.ADDED, ChangeKind.DELETED):
        notes.append(f"{c.size} bytes")
    if c.details:
        notes.append(", ".join(c.details))
    elif c.opaque:
        notes.append("opaque")
    tail = f"  ({'; '.join(notes)})" if notes else ""
    return f"{_CODES[c.kind]} {c.type.value:<7} {show(c.guest)}{tail}"


def _emit(obj: Any) -> None:
    click.echo(json.dumps(obj, indent=2))


json_option = click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")


@click.group(name="overlay", context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("app")
@click.pass_context
def overlay(ctx: click.Context, app: str) -> None:
    """Inspect and manage the file overlay of APP: what it added, modified and deleted
    compared with the host.

    Exit status: 0 ok (diff: no changes), 1 diff found changes or not confirmed, 2 error.
    """
    ctx.ensure_object(dict)
    ctx.obj["app"] = app


@overlay.command("ls")
@json_option
@click.pass_context
@_reports_errors
def ls_cmd(ctx: click.Context, as_json: bool) -> None:
    """List every entry of the upper layer (A added, M modified, D deleted, = a copy equal
    to the host)."""
    app = _app(ctx)
    ov = _inspect(app)
    entries = ov.upper_entries()
    if as_json:
        _emit({"app": app.name, "lower_root": os.fsdecode(ov.lower_root),
               "entries": [change_json(c) for c in entries]})
        return
    for c in entries:
        click.echo(change_line(c))


def _text(path: bytes | None) -> tuple[list[str] | None, str]:
    """The lines of a text file for a diff, or None and why not."""
    if path is None:
        return [], ""
    try:
        if os.lstat(path).st_size > TEXT_LIMIT:
            return None, "larger than 1 MiB"
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        return None, f"unreadable: {e.strerror}"
    if b"\0" in data:
        return None, "binary"
    try:
        return data.decode("utf-8").splitlines(keepends=True), ""
    except UnicodeDecodeError:
        return None, "binary"


def content_diff(ov: Overlay, c: Change) -> str | None:
    """A unified diff of a changed text file (None: not a regular file change)."""
    if c.type is not FileType.FILE or (c.kind is ChangeKind.MODIFIED
                                       and "content" not in c.details):
        return None
    old = ov.lower(c.guest) if c.kind is not ChangeKind.ADDED else None
    new = ov.upper(c.guest) if c.kind is not ChangeKind.DELETED else None
    a, why_a = _text(old)
    b, why_b = _text(new)
    if a is None or b is None:
        return f"Files differ ({why_a or why_b}): {show(c.guest)}\n"
    name = show(c.guest)
    out = "".join(difflib.unified_diff(
        a, b, fromfile=f"host{name}" if old else "/dev/null",
        tofile=f"app{name}" if new else "/dev/null"))
    return out if out.endswith("\n") or not out else out + "\n\\ No newline at end of file\n"


@overlay.command("diff")
@click.argument("paths", nargs=-1)
@click.option("--content", is_flag=True, help="Show a unified diff of changed text files.")
@json_option
@click.pass_context
@_reports_errors
def diff_cmd(ctx: click.Context, paths: tuple[str, ...], content: bool, as_json: bool) -> None:
    """Show what the app added (A), modified (M) and deleted (D) compared with the host,
    optionally only at PATHS/GLOBS (a path covers everything below it). Exit status 1 if
    there is any change."""
    app = _app(ctx)
    ov = _inspect(app)
    changes = ov.changes()
    if paths:
        changes = commit_mod.select(changes, commit_mod.patterns(paths))
    if as_json:
        docs = []
        for c in changes:
            d = change_json(c)
            if content:
                d["diff"] = content_diff(ov, c)
            docs.append(d)
        _emit({"app": app.name, "lower_root": os.fsdecode(ov.lower_root), "changes": docs})
    else:
        for c in changes:
            click.echo(change_line(c))
            text = content_diff(ov, c) if content else None
            if text:
                click.echo(text, nl=False)
    ctx.exit(int(ExitStatus.FAILURE) if changes else int(ExitStatus.OK))


@overlay.command("export")
@click.option("-o", "--output", type=click.Path(dir_okay=False, writable=True),
              help="Write the archive to FILE (default: stdout, if it is not a terminal).")
@json_option
@click.pass_context
@_reports_errors
def export_cmd(ctx: click.Context, output: str | None, as_json: bool) -> None:
    """Write the upper layer as an OCI-style layer tar (whiteouts as .wh. files)."""
    app = _app(ctx)
    upper = os.fsencode(app.upper)
    skipped: list[bytes] = []
    if output is None:
        if as_json:
            raise ExportError("--json needs -o FILE (the archive itself goes to stdout)")
        stdout = sys.stdout.buffer
        if stdout.isatty():
            raise ExportError("refusing to write a tar archive to a terminal; "
                              "use -o FILE or a pipe")
        export_upper(upper, stdout, stream=True, skipped=skipped)
        stdout.flush()
        _note_skipped(skipped)
        return
    try:
        with open(output, "wb") as f:
            n = export_upper(upper, f, stream=False, skipped=skipped)
    except OSError as e:
        raise ExportError(f"cannot write {output}: {e.strerror}") from None
    if as_json:
        _emit({"app": app.name, "output": output, "entries": n,
               "skipped": [os.fsdecode(p) for p in skipped]})
        return
    _note_skipped(skipped)
    click.echo(f"exported {n} entries of app {app.name}'s overlay to {output}", err=True)


def _note_skipped(skipped: list[bytes]) -> None:
    for p in skipped:
        click.echo(f"appvirt: left out {show(p)}: a socket cannot be put in a tar archive",
                   err=True)


def _confirm(question: str) -> bool:
    try:
        return click.confirm(question, default=False, err=True)
    except click.Abort:           # end of input: no answer is no
        click.echo("", err=True)
        return False


@overlay.command("reset")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@json_option
@click.pass_context
@_reports_errors
def reset_cmd(ctx: click.Context, yes: bool, as_json: bool) -> None:
    """Delete the upper layer: the app sees the pristine host again. Refused while the app
    runs."""
    app = _app(ctx)
    if is_in_use(app):                   # say so before asking (reset() checks again, locked)
        raise StateDirError(f"app {app.name} is in use by another appvirt run")
    n = commit_mod.count_entries(app)
    if not yes and not _confirm(f"Delete all {n} entries of app {app.name}'s overlay "
                                "(every file change it made)?"):
        click.echo("reset cancelled: nothing changed", err=True)
        ctx.exit(int(ExitStatus.FAILURE))
    removed = commit_mod.reset(app)
    if as_json:
        _emit({"app": app.name, "reset": True, "removed": removed})
    else:
        click.echo(f"reset app {app.name}: removed {removed} entries of its overlay")


@overlay.command("commit")
@click.argument("paths", nargs=-1, required=True)
@click.option("--dry-run", "-n", is_flag=True, help="Show what would be done; change nothing.")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@json_option
@click.pass_context
@_reports_errors
def commit_cmd(ctx: click.Context, paths: tuple[str, ...], dry_run: bool, yes: bool,
               as_json: bool) -> None:
    """Apply the app's changes at PATHS/GLOBS to the host (a path covers everything below
    it), then drop them from the overlay: the app's view stays the same."""
    app = _app(ctx)
    globs = commit_mod.patterns(paths)
    with Overlay.open(app, mode_of=_all_overlay) as ov:
        steps = commit_mod.plan(ov, commit_mod.select(ov.changes(), globs))

        def describe(s: commit_mod.CommitStep) -> str:
            host = show(ov.lower(s.change.guest))
            where = f" -> {host}" if host != show(s.change.guest) else ""
            why = " (needed by a selected path)" if s.implied else ""
            return f"{s.action} {show(s.change.guest)}{where}{why}"

        def action_json(s: commit_mod.CommitStep) -> dict[str, Any]:
            return {"action": s.action, "path": os.fsdecode(s.change.guest),
                    "host": os.fsdecode(ov.lower(s.change.guest)), "implied": s.implied}

        if not steps:
            if as_json:
                _emit({"app": app.name, "dry_run": dry_run, "committed": False,
                       "actions": []})
            else:
                click.echo("nothing to commit", err=True)
            return
        if dry_run or not yes:
            if not as_json:
                for s in steps:
                    click.echo(("would " if dry_run else "") + describe(s))
        if dry_run:
            if as_json:
                _emit({"app": app.name, "dry_run": True, "committed": False,
                       "actions": [action_json(s) for s in steps]})
            return
        if not yes and not _confirm(f"Apply these {len(steps)} changes to the host?"):
            click.echo("commit cancelled: nothing changed", err=True)
            ctx.exit(int(ExitStatus.FAILURE))
        report = (lambda s: None) if as_json else (
            (lambda s: click.echo(describe(s))) if yes else (lambda s: None))
        commit_mod.apply(ov, steps, report)
    if as_json:
        _emit({"app": app.name, "dry_run": False, "committed": True,
               "actions": [action_json(s) for s in steps]})
    else:
        click.echo(f"committed {len(steps)} changes to the host", err=True)


__all__ = ["overlay"]
