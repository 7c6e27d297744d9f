"""`appvirt vmexit` commands, through click's runner and through the root CLI's error path."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from vmx_helpers import EXAMPLES, POLICIES, REPO

from appvirt.errors import ExitStatus, LogFormatError
from appvirt.vmx.cli import vmexit
from appvirt.vmx.errors import VmxConfigError, VmxInputError

KVM = str(POLICIES / "kvm-default.yaml")


def invoke(*args: str):
    return CliRunner().invoke(vmexit, list(args))


def test_explain_bytes_json() -> None:
    result = invoke("explain", "--vmcs", KVM, "--bytes", "0f a2 0f 30", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    rows = [r for r in data["rows"] if r["kind"] == "instruction"]
    assert [r["exits"][0]["reason"] for r in rows] == [10, 32]
    assert rows[0]["exits"][0]["instruction_length"] == 2
    assert rows[0]["exits"][0]["vmm"]["handler"] == "kvm_emulate_cpuid"
    assert any("record exit information" in s for s in rows[0]["exits"][0]["trace"])


def test_explain_listing_table_names_the_deciding_bits() -> None:
    result = invoke("explain", "--vmcs", str(POLICIES / "all-exiting.yaml"),
                    "--listing", str(EXAMPLES / "seed-quiz1.lst"),
                    "--state", str(EXAMPLES / "seed-quiz1-state.yaml"), "--trace", "--memory")
    assert result.exit_code == 0, result.output
    out = result.output
    assert "28 CR_ACCESS" in out and "30 IO_INSTRUCTION" in out and "32 MSR_WRITE" in out
    assert "save guest state" in out and "TLB after the run" in out


def test_explain_requires_exactly_one_input() -> None:
    result = invoke("explain", "--vmcs", KVM)
    assert result.exit_code == 2 and "exactly one of --bytes and --listing" in result.output


def test_explain_bad_inputs_raise_one_line_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("primary: [no_such_control]\n")
    result = invoke("explain", "--vmcs", str(bad), "--bytes", "90")
    assert isinstance(result.exception, VmxConfigError)
    assert str(result.exception).startswith(f"{bad}:1: primary[0]:")
    result = invoke("explain", "--vmcs", KVM, "--bytes", "zz")
    assert isinstance(result.exception, VmxInputError)
    result = invoke("explain", "--vmcs", KVM, "--bytes", "0f")
    assert isinstance(result.exception, VmxInputError) and "not a complete" in str(result.exception)


def test_root_cli_prints_vmx_errors_in_one_line(tmp_path: Path, monkeypatch, capsys) -> None:
    from appvirt import cli as root

    monkeypatch.setitem(root.cli.commands, "vmexit", vmexit)
    bad = tmp_path / "bad.yaml"
    bad.write_text("cr0:\n  mask: nope\n")
    status = root.main(["vmexit", "explain", "--vmcs", str(bad), "--bytes", "90"])
    err = capsys.readouterr().err.strip()
    assert status == ExitStatus.USAGE
    assert err == f"appvirt: {bad}:2: cr0.mask: expected an integer, got 'nope'"
    status = root.main(["vmexit", "replay", str(tmp_path / "missing.jsonl")])
    err = capsys.readouterr().err.strip()
    assert status == LogFormatError.exit_status and err.count("\n") == 0 and "cannot read" in err


def test_replay_json_on_a_small_log(tmp_path: Path) -> None:
    log = tmp_path / "log.jsonl"
    log.write_text("\n".join(json.dumps(r) for r in [
        {"kind": "syscall", "seq": 1, "time": 1.0, "pid": 1, "tid": 1, "program": "x",
         "syscall": "reboot", "class": "system", "decision": "denied", "tracer_us": 12.5},
        {"kind": "syscall", "seq": 2, "time": 2.0, "pid": 1, "tid": 1, "program": "x",
         "syscall": "clock_gettime", "class": "time", "decision": "emulated", "tracer_us": 7.5},
    ]) + "\n")
    result = invoke("replay", str(log), "--vmcs", str(POLICIES / "all-exiting.yaml"), "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    by_class = {c["class"]: c for c in data["classes"]}
    assert by_class["reboot"]["exits_per_call"] == {"IO_INSTRUCTION": 1}
    assert by_class["time query"]["exits_per_call"] == {"RDTSC": 1}
    assert data["totals"]["calls"] == 2 and data["totals"]["tracer_us"] == 20.0
    assert all(f["source"] for f in data["cost_model"]["figures"])
    table = invoke("replay", str(log))
    assert table.exit_code == 0 and "reboot" in table.output and "Cost figures" in table.output


def test_classes_lists_twelve_sequences() -> None:
    result = invoke("classes", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["vmcs"] == "kvm-default" and len(data["classes"]) == 12
    reboot = next(c for c in data["classes"] if c["class"] == "reboot")
    assert reboot["exits"][0]["name"] == "IO_INSTRUCTION"
    table = invoke("classes", "--vmcs", str(POLICIES / "minimal-hypervisor.yaml"))
    assert table.exit_code == 0 and "process creation" in table.output


def test_vmx_imports_only_appvirt_errors_from_appvirt() -> None:
    package = REPO / "appvirt" / "vmx"
    for path in package.rglob("*.py"):
        depth = len(path.relative_to(package).parts) - 1      # subpackage depth inside vmx
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                if node.level == 0 and node.module and node.module.startswith("appvirt"):
                    assert node.module == "appvirt.errors" or node.module.startswith(
                        "appvirt.vmx"), f"{path}: from {node.module}"
                if node.level:
                    assert node.level <= depth + 1, f"{path}: relative import leaves vmx"
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    assert not alias.name.startswith("appvirt") or alias.name.startswith(
                        "appvirt.vmx"), f"{path}: import {alias.name}"


@pytest.mark.parametrize("path", sorted(str(p) for p in (REPO / "appvirt" / "vmx").rglob("*.py")))
def test_modules_stay_small(path: str) -> None:
    assert len(Path(path).read_text().splitlines()) <= 450, path
