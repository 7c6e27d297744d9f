"""VMCS and guest-state files (validation messages), example profiles, VM-entry checks."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from vmx_helpers import POLICIES, PROFILE_FILES, guest, vcpu, vmcs

from appvirt.errors import ExitStatus
from appvirt.vmx.controls import Cr0, Cr4, EntryCtl, ExitCtl, PinCtl, ProcCtl, Proc2Ctl
from appvirt.vmx.errors import VmxConfigError
from appvirt.vmx.profiles import kvm_default
from appvirt.vmx.reasons import ExitReason
from appvirt.vmx.state_file import load_state
from appvirt.vmx.transitions import vm_entry
from appvirt.vmx.vmcs import MsrAreas, MsrEntry
from appvirt.vmx.vmcs_file import load_vmcs


def write(tmp_path: Path, text: str, name: str = "v.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.mark.parametrize("name", PROFILE_FILES)
def test_example_profiles_load_and_enter(name: str) -> None:
    v = load_vmcs(POLICIES / name)
    result = vm_entry(vcpu(v))
    assert result.ok, result.problems


def test_builtin_default_equals_the_policy_file() -> None:
    from_file = load_vmcs(POLICIES / "kvm-default.yaml")
    assert dataclasses.replace(kvm_default(), source="") == dataclasses.replace(from_file, source="")


def test_kvm_default_has_the_kvm_shape() -> None:
    v = kvm_default()
    assert ProcCtl.UNCONDITIONAL_IO_EXITING in v.proc and ProcCtl.USE_IO_BITMAPS not in v.proc
    assert ProcCtl.CR3_LOAD_EXITING not in v.proc and v.ept_enabled()
    assert not v.exception_intercepted(14)               # no #PF intercept with EPT
    assert v.msr_bitmap.ref(0xC0000082, write=True).value  # LSTAR writes intercepted
    assert not v.msr_bitmap.ref(0xC0000100, write=True).value  # FS_BASE passed through


@pytest.mark.parametrize("text, line, key, fragment", [
    ("primary:\n  - hlt_exiting\n  - hlt_exitin\n", 3, "primary[1]", "did you mean 'hlt_exiting'"),
    ("cr0:\n  mask: 0x10\n  shadow: twelve\n", 3, "cr0.shadow", "expected an integer"),
    ("ept:\n  map:\n    - {guest_physical: 0x1000, access: rwz}\n", 3, "ept.map[0].access",
     "does not have the expected form"),
    ("msr_bitmap:\n  write:\n    exit: [0x10, 0x4b564d00]\n", 3, "msr_bitmap.write.exit[1]",
     "outside both bitmap ranges"),
    ("cr3_targets: {count: 2}\nsurprise: 1\n", 2, "surprise", "unknown key 'surprise'"),
    ("io_bitmaps:\n  exit_ports: [0x70, '0x1f0-']\n", 2, "io_bitmaps.exit_ports[1]",
     "a port (0x70) or an inclusive range"),
])
def test_vmcs_errors_name_file_line_key_and_expectation(tmp_path: Path, text: str, line: int,
                                                        key: str, fragment: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(VmxConfigError) as info:
        load_vmcs(path)
    message = str(info.value)
    assert message.startswith(f"{path}:{line}: {key}: "), message
    assert fragment in message
    assert "\n" not in message
    assert info.value.exit_status == ExitStatus.USAGE


def test_yaml_syntax_error_has_a_line(tmp_path: Path) -> None:
    path = write(tmp_path, "primary: [hlt_exiting\nsecondary: []\n")
    with pytest.raises(VmxConfigError) as info:
        load_vmcs(path)
    assert str(info.value).startswith(f"{path}:") and "invalid YAML" in str(info.value)


def test_missing_file_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(VmxConfigError) as info:
        load_vmcs(tmp_path / "nope.yaml")
    assert "cannot read" in str(info.value)


def test_state_file_errors_and_values(tmp_path: Path) -> None:
    path = write(tmp_path, "registers:\n  rax: 1\n  rzz: 2\n", "s.yaml")
    with pytest.raises(VmxConfigError) as info:
        load_state(path)
    assert str(info.value).startswith(f"{path}:3: registers.rzz: unknown key 'rzz'")
    path = write(tmp_path, "memory:\n  - {linear: 0x9000, value: 1}\npaging:\n  pages:\n"
                           "    - {linear: 0x1000, physical: 0x2000}\n", "s2.yaml")
    with pytest.raises(VmxConfigError) as info:
        load_state(path)
    assert f"{path}:2: memory[0].linear" in str(info.value)
    path = write(tmp_path, "cpl: 3\nregisters: {rcx: 0x10}\nmsrs: [{msr: IA32_TSC_AUX, value: 7}]\n"
                           "events: [{type: nmi, before: 1}]\n", "s3.yaml")
    setup = load_state(path)
    assert setup.state.cpl == 3 and setup.state.gpr[1] == 0x10
    assert setup.state.msrs[0xC0000103] == 7 and setup.events[0].before == 1


# -- VM entry (SDM 26.2-26.4; spec §6) -----------------------------------------------------------

def test_more_than_four_cr3_targets_is_vmfail_valid_7() -> None:
    result = vm_entry(vcpu(vmcs(cr3_target_count=5)))
    assert not result.ok and result.vm_instruction_error == 7 and result.failure_exit is None


def test_vpid_zero_and_virtual_nmis_without_nmi_exiting_are_control_errors() -> None:
    assert vm_entry(vcpu(vmcs(sec=Proc2Ctl.ENABLE_VPID, vpid=0))).vm_instruction_error == 7
    assert vm_entry(vcpu(vmcs(pin=PinCtl.VIRTUAL_NMIS))).vm_instruction_error == 7


def test_bad_host_state_is_vmfail_valid_8() -> None:
    v = vmcs(exit_ctl=ExitCtl(0))                   # a 64-bit VMM needs host address-space size
    assert vm_entry(vcpu(v)).vm_instruction_error == 8


def test_bad_guest_state_is_an_entry_failure_exit_33() -> None:
    g = guest()
    g.cr4 &= ~Cr4.VMXE
    result = vm_entry(vcpu(vmcs(), g))
    assert not result.ok and result.vm_instruction_error is None
    assert result.failure_exit.reason == ExitReason.INVALID_STATE
    assert result.failure_exit.reason_field.encode() == 0x80000021


def test_unrestricted_guest_allows_paging_off_but_not_without_ne() -> None:
    g = guest(cr0=int(Cr0.NE | Cr0.ET), efer=0)
    v = vmcs(sec=Proc2Ctl.UNRESTRICTED_GUEST | Proc2Ctl.ENABLE_EPT, entry_ctl=EntryCtl(0))
    assert vm_entry(vcpu(v, g)).ok
    g.cr0 = int(Cr0.ET)
    assert vm_entry(vcpu(v, g)).failure_exit.reason == ExitReason.INVALID_STATE


def test_msr_load_failure_is_exit_34_with_the_entry_index() -> None:
    areas = MsrAreas(entry_load=(MsrEntry(0x277, 0x0007040600070406), MsrEntry(0xC0000100, 1)))
    result = vm_entry(vcpu(vmcs(msr_areas=areas)))
    assert result.failure_exit.reason == ExitReason.MSR_LOAD_FAIL
    assert result.failure_exit.qualification == 2
    assert result.failure_exit.reason_field.encode() == 0x80000022
