"""`appvirt vmexit ...`: explain instructions as VM exits, replay intercept logs, list classes.

Parsing and presentation only; bad input raises `AppvirtError` subclasses, which the root CLI
prints as one line (`appvirt.cli.main`).
"""

from __future__ import annotations

import json
from pathlib import Path

import click
from rich.console import Console

from .cost import CostModel
from .decoder import decode_bytes, listing_mismatch, parse_hex, parse_listing
from .errors import VmxInputError
from .opclasses import SEQUENCES, run_sequence
from .profiles import kvm_default
from .render import (
    classes_json, classes_tables, explain_json, explain_tables, replay_json, replay_tables,
)
from .replay import load_calls, replay
from .simulator import Machine
from .state_file import default_setup, load_state
from .vmcs import Vmcs
from .vmcs_file import load_vmcs


def _console() -> Console:
    return Console(width=max(Console().width, 160))


def _vmcs_or_default(path: str | None) -> Vmcs:
    return load_vmcs(path) if path else kvm_default()


@click.group(name="vmexit")
def vmexit() -> None:
    """Show guest instructions and sandboxed operations as Intel VMX VM exits."""


@vmexit.command()
@click.option("--vmcs", "vmcs_path", required=True, metavar="FILE",
              help="VMCS file (YAML); see policies/vmcs/.")
@click.option("--bytes", "hex_bytes", metavar="HEX", help="Instruction bytes, e.g. '0f 30'.")
@click.option("--listing", metavar="FILE", help="objdump-style listing: 'addr: bytes insn'.")
@click.option("--state", "state_path", metavar="FILE", help="Guest-state file (YAML).")
@click.option("--address", metavar="ADDR", help="Where --bytes start (default: the state's RIP "
              "or 0x1000).")
@click.option("--trace", is_flag=True, help="Show the VM-exit and VM-entry steps.")
@click.option("--memory", is_flag=True, help="Show memory accesses, TLB lookups and contents.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of tables.")
def explain(vmcs_path: str, hex_bytes: str | None, listing: str | None, state_path: str | None,
            address: str | None, trace: bool, memory: bool, as_json: bool) -> None:
    """Run instructions under a VMCS and say, for each, whether and why it exits."""
    if (hex_bytes is None) == (listing is None):
        raise click.UsageError("give exactly one of --bytes and --listing")
    vmcs = load_vmcs(vmcs_path)
    setup = load_state(state_path) if state_path else default_setup()
    if hex_bytes is not None:
        try:
            start = int(address, 0) if address else (setup.state.rip if setup.rip_given else 0x1000)
        except ValueError:
            raise click.BadParameter(f"expected a number such as 0x1000, got {address!r}",
                                     param_hint="--address") from None
        insns = decode_bytes(parse_hex(hex_bytes), start)
    else:
        path = Path(listing or "")
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as e:
            raise VmxInputError(f"{path}: cannot read: {e.strerror or e}") from None
        insns = parse_listing(text, str(path))
    machine = Machine.build(vmcs, setup.state, setup.memory, flat_paging=setup.flat_paging,
                            trace=trace or as_json)
    result = machine.run(insns, list(setup.events))
    if as_json:
        click.echo(json.dumps(explain_json(result), indent=2))
        return
    console = _console()
    explain_tables(console, result, trace=trace, memory=memory)
    for insn in insns:
        note = listing_mismatch(insn)
        if note:
            console.print(f"note: {note}", highlight=False, markup=False)


@vmexit.command(name="replay")
@click.argument("log", metavar="LOG")
@click.option("--vmcs", "vmcs_path", metavar="FILE",
              help="VMCS file (default: the built-in KVM-like profile).")
@click.option("--ghz", type=float, default=3.0, show_default=True,
              help="Clock rate used to turn cycles into microseconds.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of tables.")
def replay_cmd(log: str, vmcs_path: str | None, ghz: float, as_json: bool) -> None:
    """Turn an appvirt intercept log into exits per reason and estimated cycles."""
    if ghz <= 0:
        raise click.BadParameter("must be positive", param_hint="--ghz")
    vmcs = _vmcs_or_default(vmcs_path)
    report = replay(load_calls(log), vmcs, CostModel(ghz=ghz))
    if as_json:
        click.echo(json.dumps(replay_json(report), indent=2))
    else:
        replay_tables(_console(), report)


@vmexit.command(name="classes")
@click.option("--vmcs", "vmcs_path", metavar="FILE",
              help="VMCS to run the sequences under (default: the built-in KVM-like profile).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of tables.")
def classes_cmd(vmcs_path: str | None, as_json: bool) -> None:
    """List the guest-kernel sequence modelled for each intercepted operation class."""
    vmcs = _vmcs_or_default(vmcs_path)
    results = {op: run_sequence(op, vmcs) for op in SEQUENCES}
    if as_json:
        click.echo(json.dumps({"vmcs": vmcs.name, "classes": classes_json(results)}, indent=2))
    else:
        classes_tables(_console(), results, vmcs.name)
