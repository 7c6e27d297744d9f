"""Operation-class sequences, the cost model and `replay` on hand-written intercept logs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from vmx_helpers import POLICIES

from appvirt.errors import LogFormatError
from appvirt.vmx.cost import CostModel
from appvirt.vmx.opclasses import SEQUENCES, OperationClass, normalise_att, run_sequence
from appvirt.vmx.profiles import kvm_default
from appvirt.vmx.qualification import EptViolationQual
from appvirt.vmx.reasons import ExitReason
from appvirt.vmx.replay import classify, load_calls, replay
from appvirt.vmx.vmcs_file import load_vmcs
from appvirt.vmx.vmm.dispatch import CostClass

ALL_EXITING = POLICIES / "all-exiting.yaml"
MINIMAL = POLICIES / "minimal-hypervisor.yaml"


def reasons(op: OperationClass, vmcs=None) -> list[ExitReason]:
    return [h.exit.reason for h in run_sequence(op, vmcs or kvm_default()).exits]


def test_every_class_of_the_seed_list_has_a_sequence() -> None:
    assert set(SEQUENCES) == set(OperationClass) and len(OperationClass) == 12


@pytest.mark.parametrize("op", list(OperationClass))
def test_sequences_decode_to_their_documented_instructions(op: OperationClass) -> None:
    insns, _ = SEQUENCES[op].program()
    documented = [s.asm for s in SEQUENCES[op].steps if s.event is None]
    assert [normalise_att(i.att) for i in insns] == [normalise_att(a) for a in documented]


def test_reboot_is_an_out_to_0xcf9_and_stops_the_vm() -> None:
    result = run_sequence(OperationClass.REBOOT, kvm_default())
    (handled,) = result.exits
    assert (handled.exit.reason, handled.exit.qualification) == (ExitReason.IO_INSTRUCTION, 0x0CF90000)
    assert result.stopped and "0xcf9" in result.stopped


def test_time_query_exits_only_with_rdtsc_exiting() -> None:
    assert reasons(OperationClass.TIME_QUERY) == []
    assert reasons(OperationClass.TIME_QUERY, load_vmcs(ALL_EXITING)) == [ExitReason.RDTSC]


def test_process_creation_under_kvm_is_one_ept_fault_in() -> None:
    result = run_sequence(OperationClass.PROCESS_CREATE, kvm_default())
    (handled,) = result.exits
    q = EptViolationQual.decode(handled.exit.qualification)
    assert handled.exit.reason == ExitReason.EPT_VIOLATION
    assert q.write and q.linear_valid and q.final_translation and not q.readable
    assert handled.exit.guest_physical_address == 0x50000000
    assert handled.handler.cost is CostClass.EPT_FAULT_IN
    assert any("#PF" in d for row in result.rows for d in row.delivered)   # demand paging


def test_process_creation_under_shadow_paging_exits_on_cr3_and_pf() -> None:
    assert reasons(OperationClass.PROCESS_CREATE, load_vmcs(ALL_EXITING)) == [
        ExitReason.CR_ACCESS, ExitReason.EXCEPTION_NMI]


def test_network_connect_under_kvm_shows_mmio_interrupt_window_and_eoi() -> None:
    # Spec §7: network connect -> 48/49 (doorbell), 1 (interrupt), 7 (window), 45 (EOI exit).
    result = run_sequence(OperationClass.NETWORK_CONNECT, kvm_default())
    assert [h.exit.reason for h in result.exits] == [
        ExitReason.EPT_MISCONFIG, ExitReason.EXTERNAL_INTERRUPT, ExitReason.PENDING_INTERRUPT,
        ExitReason.EOI_INDUCED]
    eoi = result.exits[-1]
    assert eoi.exit.qualification == 0x41                  # the vector whose EOI exited
    assert eoi.exit.instruction_length is None             # trap-like, not instruction-based


@pytest.mark.parametrize("path", [None, ALL_EXITING, MINIMAL])
def test_attribute_queries_in_the_page_cache_never_exit(path) -> None:
    assert reasons(OperationClass.FILE_ATTRIBUTES, load_vmcs(path) if path else None) == []


def test_minimal_hypervisor_sees_no_exits_for_any_class() -> None:
    v = load_vmcs(MINIMAL)
    assert all(reasons(op, v) == [] for op in OperationClass)


def test_cost_model_defaults_follow_the_spec() -> None:
    cost = CostModel()
    base = cost.cycles(CostClass.MINIMAL)
    assert 1_000 <= base <= 1_110                       # kvm-unit-tests cpuid, spec §8
    assert 3_000 <= cost.cycles(CostClass.KERNEL_EMULATION) <= 4_011   # tscdeadline_immed
    assert 4_000 <= cost.cycles(CostClass.USERSPACE) - base <= 10_000  # spec's estimate
    assert CostModel(nested=True).cycles(CostClass.MINIMAL) == base * 13
    assert all(f.source for _, f in cost.citations())
    assert cost.microseconds(3_000) == pytest.approx(1.0)


# -- replay -------------------------------------------------------------------------------------

def _line(seq: int, syscall: str, cls: str, us: float, **extra) -> str:
    record = {"kind": "syscall", "seq": seq, "time": 1700000000.0 + seq, "pid": 100, "tid": 100,
              "program": extra.pop("program", "/usr/bin/demo"), "syscall": syscall, "class": cls,
              "decision": "allowed", "tracer_us": us, **extra}
    return json.dumps(record)


@pytest.fixture()
def log(tmp_path: Path) -> Path:
    lines = [
        json.dumps({"kind": "run", "argv": ["demo"], "time": 1700000000.0}),
        json.dumps({"kind": "exec", "pid": 100, "path": "/usr/bin/demo"}),
        _line(1, "openat", "file", 10.0, path="/tmp/x"),
        json.dumps({"kind": "result", "seq": 1, "result": 3}),
        _line(2, "openat", "file", 30.0),
        _line(3, "unlinkat", "file", 8.0),
        _line(4, "getdents64", "file", 12.0),
        _line(5, "newfstatat", "file", 4.0),
        _line(6, "clone", "process", 50.0),
        _line(7, "clock_gettime", "time", 2.0),
        _line(8, "settimeofday", "time", 6.0, decision="emulated"),
        _line(9, "connect", "network", 20.0, decision="denied", errno="EACCES", result=-13),
        _line(10, "reboot", "system", 5.0, decision="denied"),
        _line(11, "finit_module", "system", 7.0, decision="denied"),
        _line(12, "kill", "process", 3.0),
        _line(13, "openat", "file", 9.0, program="/usr/sbin/useradd",
              args={"dfd": "AT_FDCWD", "filename": "/etc/passwd+",
                    "flags": "O_WRONLY|O_CREAT|O_TRUNC", "mode": "0o600"}),
        _line(14, "uname", "identity", 1.0),
        _line(15, "openat", "file", 2.0, program="/bin/ls",
              args={"dfd": "AT_FDCWD", "filename": "/etc/passwd", "flags": "O_RDONLY|O_CLOEXEC"}),
        json.dumps({"kind": "signal", "pid": 100, "signal": "SIGTERM"}),
        json.dumps({"kind": "exit", "pid": 100, "status": 0}),
        '{"kind": "syscall", "seq": 16, "time": 17000',        # truncated by SIGKILL
    ]
    path = tmp_path / "intercepts.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_load_calls_reads_syscalls_and_skips_the_truncated_tail(log: Path) -> None:
    calls = load_calls(log)
    assert [c.seq for c in calls] == list(range(0, 16))      # 0: the exec event
    assert (calls[0].syscall, calls[0].cls, calls[0].tracer_us) == ("execve", "process", 0.0)
    assert calls[9].errno == "EACCES" and calls[9].result == -13
    assert calls[1].path == "/tmp/x"


def test_classification(log: Path) -> None:
    ops = {c.seq: classify(c) for c in load_calls(log)}
    assert ops == {
        0: OperationClass.PROCESS_CREATE, 1: OperationClass.FILE_OPEN_CREATE, 2: OperationClass.FILE_OPEN_CREATE,
        3: OperationClass.FILE_DELETE, 4: OperationClass.FILE_LIST,
        5: OperationClass.FILE_ATTRIBUTES, 6: OperationClass.PROCESS_CREATE,
        7: OperationClass.TIME_QUERY, 8: OperationClass.TIME_SET,
        9: OperationClass.NETWORK_CONNECT, 10: OperationClass.REBOOT,
        11: OperationClass.DRIVER_LOAD, 12: OperationClass.PROCESS_TERMINATE,
        13: OperationClass.USER_CREATE, 14: None, 15: OperationClass.FILE_OPEN_CREATE}


def test_replay_aggregates_calls_exits_and_cycles(log: Path) -> None:
    report = replay(load_calls(log), kvm_default())
    by_class = {s.op: s for s in report.classes}
    opens = by_class[OperationClass.FILE_OPEN_CREATE]
    assert opens.calls == 3 and opens.tracer_us_per_call == pytest.approx(14.0)
    reboot = by_class[OperationClass.REBOOT].hardware
    assert reboot.exits == ((ExitReason.IO_INSTRUCTION, 1),)
    unmapped = by_class[None]
    assert unmapped.calls == 1 and unmapped.hardware is None
    assert report.total_calls == 16
    assert report.total_tracer_us == pytest.approx(169.0)
    per_reason = {r: n for r, n, _ in report.reason_totals}
    # Three opens, one unlink, one getdents, one useradd write: one doorbell each (spec §7).
    assert per_reason[ExitReason.EPT_MISCONFIG] == 6 + 1         # + connect's doorbell
    assert report.total_cycles == sum(
        s.hardware.cycles * s.calls for s in report.classes if s.hardware)


def test_process_events_count_as_process_creation(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    path.write_text("\n".join([
        json.dumps({"kind": "spawn", "seq": 1, "pid": 5, "tid": 5, "child": 6, "how": "vfork"}),
        json.dumps({"kind": "spawn", "seq": 2, "pid": 5, "tid": 5, "child": 7, "how": "thread"}),
        _line(3, "execve", "process", 40.0),                 # the call, stood for by its event
        json.dumps({"kind": "exec", "seq": 4, "pid": 6, "tid": 6, "program": "/bin/true"}),
    ]) + "\n")
    calls = load_calls(path)
    assert [(c.seq, c.syscall) for c in calls] == [(1, "vfork"), (2, "clone"), (4, "execve")]
    assert {classify(c) for c in calls} == {OperationClass.PROCESS_CREATE}


def test_a_malformed_middle_line_is_a_log_format_error(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text(_line(1, "openat", "file", 1.0) + "\n{oops\n" + _line(2, "openat", "file", 1.0) + "\n")
    with pytest.raises(LogFormatError) as info:
        load_calls(path)
    assert str(info.value) == f"{path}:2: not a JSON object"
    path.write_text(json.dumps({"kind": "syscall", "seq": 1}) + "\n" + _line(2, "openat", "file", 1.0))
    with pytest.raises(LogFormatError, match=":1: syscall line lacks a valid 'pid'"):
        load_calls(path)


def test_missing_log_is_a_log_format_error(tmp_path: Path) -> None:
    with pytest.raises(LogFormatError, match="cannot read"):
        load_calls(tmp_path / "absent.jsonl")


def test_empty_log_gives_an_empty_report(tmp_path: Path) -> None:
    path = tmp_path / "empty.jsonl"
    path.write_text("")
    report = replay(load_calls(path), kvm_default())
    assert report.total_calls == 0 and report.classes == ()
