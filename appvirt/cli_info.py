"""`appvirt syscalls` and `appvirt policy check|show`."""

from __future__ import annotations

import json

import click
import yaml
from rich.console import Console
from rich.table import Table

from .core import sysnums
from .core.table import UNTRACED
from .handlers import TABLE
from .policy import load_policy


@click.command("syscalls")
@click.option("--all", "show_all", is_flag=True,
              help="Also list the calls that run natively, untraced.")
@click.option("--policy", "policy_file", type=click.Path(dir_okay=False),
              help="Say when each call stops under this policy.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def syscalls_cmd(show_all: bool, policy_file: str | None, as_json: bool) -> None:
    """List the system calls appvirt intercepts: name, class, support, note."""
    traced = TABLE.traced_for(load_policy(policy_file)) if policy_file else None

    def when(e) -> str:
        if traced is not None:
            if e.name not in traced:
                return "never (this policy)"
            return "when arguments match" if traced[e.name] else "always"
        cond = "when arguments match" if e.trace_if or e.trace_if_for else "always"
        return cond if e.enabled is None else f"{cond}, if the policy needs it"

    rows = [{"nr": e.nr, "name": e.name, "class": e.op.value, "support": e.support.value,
             "traced": when(e), "note": e.note} for e in TABLE.entries]
    if show_all:
        rows += [{"nr": sysnums.nr(n), "name": n, "class": "-", "support": "native",
                  "traced": "never", "note": "runs at native speed"} for n in UNTRACED]
    rows.sort(key=lambda r: r["nr"])
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    t = Table(title=f"{len(TABLE.entries)} intercepted system calls (x86_64)")
    for col in ("nr", "name", "class", "support", "traced", "note"):
        t.add_column(col, overflow="fold")
    for r in rows:
        t.add_row(str(r["nr"]), r["name"], r["class"], r["support"], r["traced"], r["note"])
    Console().print(t)


@click.group("policy")
def policy_group() -> None:
    """Validate policies and show them with every default filled in."""


@policy_group.command("check")
@click.argument("file", type=click.Path(dir_okay=False))
def policy_check(file: str) -> None:
    """Validate FILE; exit 0 if it is a valid policy, 2 (with the reason) if not."""
    p = load_policy(file)
    click.echo(f"{file}: ok (app {p.app}, {len(p.raw['files']['rules'])} file rule(s), "
               f"network {p.raw['network']['preset']} with {len(p.raw['network']['rules'])} "
               f"rule(s), log level {p.log.level.value})")


@policy_group.command("show")
@click.argument("file", type=click.Path(dir_okay=False))
def policy_show(file: str) -> None:
    """Print the effective policy of FILE, every default filled in."""
    p = load_policy(file)
    click.echo(yaml.safe_dump(p.raw, sort_keys=False, default_flow_style=False), nl=False)
