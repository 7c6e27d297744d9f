"""VMX control fields, VMCS field encodings and the architectural bits they refer to.

Bit positions are Bochs's (`bochs/cpu/vmx_ctrls.h`) and the SDM's (24.6-24.8); spec §2. Member
names are the SDM control names in upper snake case, so that a VMCS file can name them.
"""

from __future__ import annotations

import enum


class PinCtl(enum.IntFlag):
    """Pin-based VM-execution controls (VMCS 0x4000; SDM 24.6.1)."""

    EXTERNAL_INTERRUPT_EXITING = 1 << 0
    NMI_EXITING = 1 << 3
    VIRTUAL_NMIS = 1 << 5
    ACTIVATE_PREEMPTION_TIMER = 1 << 6
    PROCESS_POSTED_INTERRUPTS = 1 << 7


class ProcCtl(enum.IntFlag):
    """Primary processor-based VM-execution controls (VMCS 0x4002; SDM 24.6.2, Table 24-6)."""

    INTERRUPT_WINDOW_EXITING = 1 << 2
    USE_TSC_OFFSETTING = 1 << 3
    HLT_EXITING = 1 << 7
    INVLPG_EXITING = 1 << 9
    MWAIT_EXITING = 1 << 10
    RDPMC_EXITING = 1 << 11
    RDTSC_EXITING = 1 << 12
    CR3_LOAD_EXITING = 1 << 15
    CR3_STORE_EXITING = 1 << 16
    ACTIVATE_TERTIARY_CONTROLS = 1 << 17
    CR8_LOAD_EXITING = 1 << 19
    CR8_STORE_EXITING = 1 << 20
    USE_TPR_SHADOW = 1 << 21
    NMI_WINDOW_EXITING = 1 << 22
    MOV_DR_EXITING = 1 << 23
    UNCONDITIONAL_IO_EXITING = 1 << 24
    USE_IO_BITMAPS = 1 << 25
    MONITOR_TRAP_FLAG = 1 << 27
    USE_MSR_BITMAPS = 1 << 28
    MONITOR_EXITING = 1 << 29
    PAUSE_EXITING = 1 << 30
    ACTIVATE_SECONDARY_CONTROLS = 1 << 31


class Proc2Ctl(enum.IntFlag):
    """Secondary processor-based controls (VMCS 0x401E; SDM 24.6.2, Table 24-7).

    Treated as all 0 unless primary bit 31 is set (`Vmcs.secondary`).
    """

    VIRTUALIZE_APIC_ACCESSES = 1 << 0
    ENABLE_EPT = 1 << 1
    DESCRIPTOR_TABLE_EXITING = 1 << 2
    ENABLE_RDTSCP = 1 << 3
    VIRTUALIZE_X2APIC_MODE = 1 << 4
    ENABLE_VPID = 1 << 5
    WBINVD_EXITING = 1 << 6
    UNRESTRICTED_GUEST = 1 << 7
    APIC_REGISTER_VIRTUALIZATION = 1 << 8
    VIRTUAL_INTERRUPT_DELIVERY = 1 << 9
    PAUSE_LOOP_EXITING = 1 << 10
    RDRAND_EXITING = 1 << 11
    ENABLE_INVPCID = 1 << 12
    ENABLE_VM_FUNCTIONS = 1 << 13
    VMCS_SHADOWING = 1 << 14
    ENCLS_EXITING = 1 << 15
    RDSEED_EXITING = 1 << 16
    ENABLE_PML = 1 << 17
    EPT_VIOLATION_VE = 1 << 18
    ENABLE_XSAVES_XRSTORS = 1 << 20
    USE_TSC_SCALING = 1 << 25
    ENABLE_USER_WAIT_AND_PAUSE = 1 << 26


class ExitCtl(enum.IntFlag):
    """VM-exit controls (VMCS 0x400C; SDM 24.7.1)."""

    SAVE_DEBUG_CONTROLS = 1 << 2
    HOST_ADDRESS_SPACE_SIZE = 1 << 9
    LOAD_PERF_GLOBAL_CTRL = 1 << 12
    ACK_INTERRUPT_ON_EXIT = 1 << 15
    SAVE_PAT = 1 << 18
    LOAD_PAT = 1 << 19
    SAVE_EFER = 1 << 20
    LOAD_EFER = 1 << 21
    SAVE_PREEMPTION_TIMER = 1 << 22


class EntryCtl(enum.IntFlag):
    """VM-entry controls (VMCS 0x4012; SDM 24.8.1)."""

    LOAD_DEBUG_CONTROLS = 1 << 2
    IA32E_MODE_GUEST = 1 << 9
    LOAD_PAT = 1 << 14
    LOAD_EFER = 1 << 15


class VmcsField(enum.IntEnum):
    """VMCS field encodings used by the simulator (Bochs vmx.h; SDM App. B; spec §2)."""

    IO_BITMAP_A = 0x2000
    IO_BITMAP_B = 0x2002
    MSR_BITMAP = 0x2004
    EXIT_MSR_STORE_ADDR = 0x2006
    EXIT_MSR_LOAD_ADDR = 0x2008
    ENTRY_MSR_LOAD_ADDR = 0x200A
    TSC_OFFSET = 0x2010
    EPT_POINTER = 0x201A
    TSC_MULTIPLIER = 0x2032
    GUEST_PHYSICAL_ADDRESS = 0x2400
    PIN_BASED_CONTROLS = 0x4000
    PRIMARY_PROC_CONTROLS = 0x4002
    EXCEPTION_BITMAP = 0x4004
    PAGE_FAULT_ERROR_CODE_MASK = 0x4006
    PAGE_FAULT_ERROR_CODE_MATCH = 0x4008
    CR3_TARGET_COUNT = 0x400A
    EXIT_CONTROLS = 0x400C
    EXIT_MSR_STORE_COUNT = 0x400E
    EXIT_MSR_LOAD_COUNT = 0x4010
    ENTRY_CONTROLS = 0x4012
    ENTRY_MSR_LOAD_COUNT = 0x4014
    TPR_THRESHOLD = 0x401C
    SECONDARY_PROC_CONTROLS = 0x401E
    PLE_GAP = 0x4020
    PLE_WINDOW = 0x4022
    VM_INSTRUCTION_ERROR = 0x4400
    EXIT_REASON = 0x4402
    EXIT_INTERRUPTION_INFO = 0x4404
    EXIT_INTERRUPTION_ERROR_CODE = 0x4406
    IDT_VECTORING_INFO = 0x4408
    IDT_VECTORING_ERROR_CODE = 0x440A
    EXIT_INSTRUCTION_LENGTH = 0x440C
    EXIT_INSTRUCTION_INFO = 0x440E
    PREEMPTION_TIMER_VALUE = 0x482E
    CR0_GUEST_HOST_MASK = 0x6000
    CR4_GUEST_HOST_MASK = 0x6002
    CR0_READ_SHADOW = 0x6004
    CR4_READ_SHADOW = 0x6006
    CR3_TARGET_VALUE0 = 0x6008
    CR3_TARGET_VALUE1 = 0x600A
    CR3_TARGET_VALUE2 = 0x600C
    CR3_TARGET_VALUE3 = 0x600E
    EXIT_QUALIFICATION = 0x6400
    GUEST_LINEAR_ADDRESS = 0x640A
    VPID = 0x0000


class Vector(enum.IntEnum):
    """Exception vectors (SDM Vol. 3A Table 6-1)."""

    DE = 0
    DB = 1
    NMI = 2
    BP = 3
    OF = 4
    BR = 5
    UD = 6
    NM = 7
    DF = 8
    TS = 10
    NP = 11
    SS = 12
    GP = 13
    PF = 14
    MF = 16
    AC = 17
    MC = 18
    XM = 19
    VE = 20
    CP = 21


class InterruptionType(enum.IntEnum):
    """Bits 10:8 of the interruption-information fields (SDM 24.9.2; spec §4.5)."""

    EXTERNAL_INTERRUPT = 0
    NMI = 2
    HARDWARE_EXCEPTION = 3
    SOFTWARE_INTERRUPT = 4
    PRIVILEGED_SOFTWARE_EXCEPTION = 5
    SOFTWARE_EXCEPTION = 6
    OTHER_EVENT = 7


class Cr0(enum.IntFlag):
    """CR0 bits (SDM Vol. 3A 2.5)."""

    PE = 1 << 0
    MP = 1 << 1
    EM = 1 << 2
    TS = 1 << 3
    ET = 1 << 4
    NE = 1 << 5
    WP = 1 << 16
    AM = 1 << 18
    NW = 1 << 29
    CD = 1 << 30
    PG = 1 << 31


class Cr4(enum.IntFlag):
    """CR4 bits (SDM Vol. 3A 2.5)."""

    VME = 1 << 0
    PVI = 1 << 1
    TSD = 1 << 2
    DE = 1 << 3
    PSE = 1 << 4
    PAE = 1 << 5
    MCE = 1 << 6
    PGE = 1 << 7
    PCE = 1 << 8
    OSFXSR = 1 << 9
    OSXMMEXCPT = 1 << 10
    UMIP = 1 << 11
    LA57 = 1 << 12
    VMXE = 1 << 13
    SMXE = 1 << 14
    FSGSBASE = 1 << 16
    PCIDE = 1 << 17
    OSXSAVE = 1 << 18
    SMEP = 1 << 20
    SMAP = 1 << 21
    PKE = 1 << 22


class Efer(enum.IntFlag):
    """IA32_EFER bits (SDM Vol. 3A 2.2.1)."""

    SCE = 1 << 0
    LME = 1 << 8
    LMA = 1 << 10
    NXE = 1 << 11


class Rflags(enum.IntFlag):
    """RFLAGS bits the simulator uses (SDM Vol. 1 3.4.3)."""

    CF = 1 << 0
    FIXED1 = 1 << 1
    ZF = 1 << 6
    TF = 1 << 8
    IF = 1 << 9
    IOPL = 3 << 12
    NT = 1 << 14
    RF = 1 << 16
    VM = 1 << 17
    AC = 1 << 18


class Msr(enum.IntEnum):
    """MSR indices named in the spec and used by the VMM model (SDM Vol. 4)."""

    IA32_P5_MC_ADDR = 0x0
    IA32_TSC = 0x10
    IA32_APIC_BASE = 0x1B
    IA32_TSC_ADJUST = 0x3B
    IA32_BIOS_SIGN_ID = 0x8B
    IA32_SMM_MONITOR_CTL = 0x9B
    IA32_SMBASE = 0x9E
    IA32_SYSENTER_CS = 0x174
    IA32_SYSENTER_ESP = 0x175
    IA32_SYSENTER_EIP = 0x176
    IA32_MISC_ENABLE = 0x1A0
    IA32_PAT = 0x277
    IA32_TSC_DEADLINE = 0x6E0
    X2APIC_TPR = 0x808
    X2APIC_EOI = 0x80B
    X2APIC_ICR = 0x830
    IA32_XSS = 0xDA0
    IA32_TSC_AUX = 0xC0000103
    IA32_EFER = 0xC0000080
    IA32_STAR = 0xC0000081
    IA32_LSTAR = 0xC0000082
    IA32_CSTAR = 0xC0000083
    IA32_FMASK = 0xC0000084
    IA32_FS_BASE = 0xC0000100
    IA32_GS_BASE = 0xC0000101
    IA32_KERNEL_GS_BASE = 0xC0000102
    KVM_SYSTEM_TIME_NEW = 0x4B564D01
    KVM_WALL_CLOCK_NEW = 0x4B564D00
    HV_X64_GUEST_OS_ID = 0x40000000


def flag_names(value: enum.IntFlag) -> list[str]:
    """Names of the set members of a flag value, in bit order (for display and dumps)."""
    return [m.name for m in type(value) if m.name and m in value]
