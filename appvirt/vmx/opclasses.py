"""The sandbox's operation classes, one level down: guest-kernel instruction and event sequences.

Each class is a short, documented sequence of real machine code (decoded by capstone like any
other input) and events, following the spec's mapping (§7): what the guest kernel executes on
the way to the device, the page tables or the clock when a program performs the operation. The
simulator runs it under a VMCS; `replay` multiplies the resulting exits by the number of calls.
These are models of one representative path, not traces of a real kernel.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from .decoder import Insn, decode_one, normalise_att
from .errors import VmxInputError
from .program import EventKind, GuestEvent
from .simulator import Machine, RunResult
from .state_file import GuestSetup, setup_from_data
from .vmcs import Vmcs

KERNEL_TEXT = 0xFFFFFFFF81000000
MODULE_TEXT = 0xFFFFFFFFC0000000
STACK_TOP = 0xFFFFC90000008000
VIRTIO_BLK_NOTIFY = 0xFFFFC90000100000      # mapped to GPA 0xfebf0000
VIRTIO_NET_NOTIFY = 0xFFFFC90000104000      # mapped to GPA 0xfebf4000
FRESH_USER_PAGE = 0x7F0000001000            # GPA 0x50000000: RAM not yet mapped in EPT
NOT_PRESENT_PAGE = 0x7F0000000000           # guest PTE not present: demand paging
INODE_CACHE = 0xFFFF888000200000            # an inode already in the page cache
TABLES_AT = 0x100000


class OperationClass(enum.Enum):
    """What appvirt intercepts, per the seed quiz's list (spec §7)."""

    FILE_OPEN_CREATE = "file open/create"
    FILE_DELETE = "file delete"
    FILE_LIST = "list files"
    FILE_ATTRIBUTES = "permissions/attributes"
    PROCESS_CREATE = "process creation"
    PROCESS_TERMINATE = "process termination"
    TIME_QUERY = "time query"
    TIME_SET = "set time"
    NETWORK_CONNECT = "network connect"
    REBOOT = "reboot"
    DRIVER_LOAD = "driver load"
    USER_CREATE = "user creation"


@dataclass(frozen=True, slots=True)
class Step:
    """One instruction (hex bytes + the AT&T text it must decode to) or one event."""

    hex: str = ""
    asm: str = ""
    why: str = ""
    at: int | None = None
    event: EventKind | None = None
    vector: int = 0


@dataclass(frozen=True, slots=True)
class OpSequence:
    """A class's sequence and the reasoning behind it."""

    op: OperationClass
    summary: str
    steps: tuple[Step, ...]

    def program(self) -> tuple[list[Insn], list[GuestEvent]]:
        """Decode the steps at kernel addresses; events attach to the next instruction."""
        insns: list[Insn] = []
        events: list[GuestEvent] = []
        address = KERNEL_TEXT
        for step in self.steps:
            if step.event is not None:
                events.append(GuestEvent(step.event, len(insns), step.vector))
                continue
            if step.at is not None:
                address = step.at
            insn = decode_one(bytes.fromhex(step.hex), address, listing_text=step.asm)
            if insn is None or insn.length != len(bytes.fromhex(step.hex)) \
                    or normalise_att(insn.att) != normalise_att(step.asm):
                raise VmxInputError(f"{self.op.value}: bytes {step.hex} do not decode to "
                                    f"'{step.asm}'")
            insns.append(insn)
            address = insn.next_rip
        return insns, events


def _imm64(value: int) -> str:
    return value.to_bytes(8, "little").hex()


def _imm32(value: int) -> str:
    return value.to_bytes(4, "little").hex()


def _movabs(reg: str, value: int) -> Step:
    opcode = {"rax": "48b8", "rsi": "48be", "rdi": "48bf"}[reg]
    return Step(opcode + _imm64(value), f"movabsq ${value:#x}, %{reg}")


def _wrmsr(msr: int, eax: int, why: str) -> tuple[Step, ...]:
    return (Step("b9" + _imm32(msr), f"movl ${msr:#x}, %ecx"),
            Step("b8" + _imm32(eax), f"movl ${eax:#x}, %eax"),
            Step("31d2", "xorl %edx, %edx"),
            Step("0f30", "wrmsr", why))


_BLOCK_IO = (
    _movabs("rdi", VIRTIO_BLK_NOTIFY),
    Step("31c0", "xorl %eax, %eax"),
    Step("8907", "movl %eax, (%rdi)",
         "virtio-blk queue notify: an MMIO doorbell write (KVM: misconfigured EPT entry, 49)"),
    Step(event=EventKind.EXTERNAL_INTERRUPT, vector=0x31,
         why="the request completes: the disk's MSI arrives as an external interrupt"),
    *_wrmsr(0x80B, 0, "x2APIC EOI for the completion interrupt (APICv passes it through)"),
)

SEQUENCES: dict[OperationClass, OpSequence] = {}


def _add(op: OperationClass, summary: str, *steps: Step) -> None:
    SEQUENCES[op] = OpSequence(op, summary, tuple(steps))


_add(OperationClass.FILE_OPEN_CREATE,
     "A create or an open that misses the page cache reads/writes one metadata block through "
     "virtio-blk: a doorbell MMIO write, the completion interrupt, its EOI.", *_BLOCK_IO)
_add(OperationClass.FILE_DELETE,
     "Unlink dirties the directory block and inode; the journal commit is one block write "
     "through virtio-blk (doorbell, completion interrupt, EOI).", *_BLOCK_IO)
_add(OperationClass.FILE_LIST,
     "getdents64 on a directory not in the page cache reads its block through virtio-blk.",
     *_BLOCK_IO)
_add(OperationClass.FILE_ATTRIBUTES,
     "stat/chmod hit the inode in the page cache: ordinary loads and stores, no device I/O "
     "(writeback happens later, asynchronously).",
     _movabs("rsi", INODE_CACHE),
     Step("488b06", "movq (%rsi), %rax", "read the cached inode"),
     Step("48890 6".replace(" ", ""), "movq %rax, (%rsi)", "update i_mode in the cached inode"))
_add(OperationClass.PROCESS_CREATE,
     "fork/exec: switch to the child's address space (MOV to CR3), a demand-paging #PF in the "
     "guest, then the first touch of a guest-physical page the VMM has not mapped yet.",
     _movabs("rax", TABLES_AT),
     Step("0f22d8", "movq %rax, %cr3", "context switch to the new process (CR3 load)"),
     _movabs("rdi", NOT_PRESENT_PAGE),
     Step("488907", "movq %rax, (%rdi)", "copy-on-write/demand-zero #PF in the guest"),
     _movabs("rsi", FRESH_USER_PAGE),
     Step("488906", "movq %rax, (%rsi)", "first touch of a fresh guest-physical page (EPT)"))
_add(OperationClass.PROCESS_TERMINATE,
     "exit_group/kill: an IPI to the CPU running a sibling thread (x2APIC ICR write), then a "
     "context switch away (CR3 load).",
     *_wrmsr(0x830, 0xFD, "x2APIC ICR: reschedule IPI (intercepted by KVM)"),
     _movabs("rax", TABLES_AT),
     Step("0f22d8", "movq %rax, %cr3", "switch to the next task"))
_add(OperationClass.TIME_QUERY,
     "clock_gettime reads the TSC (kvmclock/tsc clocksource): LFENCE; RDTSC.",
     Step("0faee8", "lfence"),
     Step("0f31", "rdtsc", "offset/scaled TSC, or an exit with 'RDTSC exiting'"))
_add(OperationClass.TIME_SET,
     "settimeofday: the kernel re-programs the TSC deadline timer and writes the CMOS RTC "
     "(index 0x70, data 0x71).",
     *_wrmsr(0x6E0, 0x10000000, "IA32_TSC_DEADLINE: re-arm the timer"),
     Step("b000", "movb $0, %al"),
     Step("e670", "outb %al, $0x70", "select RTC seconds"),
     Step("b030", "movb $0x30, %al"),
     Step("e671", "outb %al, $0x71", "write seconds (BCD)"))
_add(OperationClass.NETWORK_CONNECT,
     "connect sends a SYN: virtio-net TX doorbell (MMIO) with interrupts off; the SYN-ACK "
     "interrupt (a level-triggered INTx line) arrives while the guest has IF = 0, so the VMM "
     "waits for an interrupt window; the guest's EOI is virtualized and, the vector being in "
     "the EOI-exit bitmap, exits so that the VMM can forward it to the IOAPIC.",
     Step("fa", "cli", "the TX path runs with interrupts disabled"),
     _movabs("rdi", VIRTIO_NET_NOTIFY),
     Step("31c0", "xorl %eax, %eax"),
     Step("8907", "movl %eax, (%rdi)", "virtio-net queue notify (MMIO doorbell)"),
     Step(event=EventKind.EXTERNAL_INTERRUPT, vector=0x41, why="SYN-ACK: RX completion MSI"),
     Step("fb", "sti", "interrupts back on: the interrupt window opens after the next instruction"),
     Step("90", "nop"),
     *_wrmsr(0x80B, 0, "x2APIC EOI (virtualized; EOI-induced exit if in the EOI-exit bitmap)"))
_add(OperationClass.REBOOT,
     "reboot: write 0x06 to the PCI reset-control register 0xCF9 (Linux reboot=pci).",
     Step("66baf90c", "movw $0xcf9, %dx"),
     Step("b006", "movb $6, %al"),
     Step("ee", "outb %al, %dx", "reset request"))
_add(OperationClass.DRIVER_LOAD,
     "init_module: copy the module into fresh vmalloc pages, flush the stale translation, call "
     "its init function (first execution from the new page).",
     _movabs("rdi", MODULE_TEXT),
     Step("488907", "movq %rax, (%rdi)", "write module text to a fresh page"),
     Step("0f013f", "invlpg (%rdi)", "flush the stale translation"),
     Step("ffd7", "callq *%rdi", "call the module's init"),
     Step("31c0", "xorl %eax, %eax", "first instruction fetched from the module page",
          at=MODULE_TEXT),
     Step("c3", "retq"))
_add(OperationClass.USER_CREATE,
     "useradd writes /etc/passwd, /etc/shadow and /etc/group: file writes, modelled as one "
     "block write through virtio-blk each time the file is synced.", *_BLOCK_IO)


def platform_setup() -> GuestSetup:
    """The guest kernel the sequences run in: 64-bit, CPL 0, interrupts on, real page tables."""
    return setup_from_data({
        "cpl": 0, "rflags": 0x202,
        "registers": {"rsp": STACK_TOP},
        "paging": {"tables_at": TABLES_AT, "pages": [
            {"linear": KERNEL_TEXT, "physical": 0x1000000, "writable": False},
            {"linear": STACK_TOP - 0x1000, "physical": 0x2000000},
            {"linear": INODE_CACHE, "physical": 0x200000},
            {"linear": VIRTIO_BLK_NOTIFY, "physical": 0xFEBF0000, "executable": False},
            {"linear": VIRTIO_NET_NOTIFY, "physical": 0xFEBF4000, "executable": False},
            {"linear": FRESH_USER_PAGE, "physical": 0x50000000, "user": True},
            {"linear": NOT_PRESENT_PAGE, "present": False},
            {"linear": MODULE_TEXT, "physical": 0x48000000},
        ]},
    }, file="<operation-class platform>")


def run_sequence(op: OperationClass, vmcs: Vmcs, *, trace: bool = False) -> RunResult:
    """Run one class's sequence on a fresh platform under `vmcs`."""
    setup = platform_setup()
    machine = Machine.build(vmcs, setup.state, setup.memory, flat_paging=setup.flat_paging,
                            trace=trace)
    insns, events = SEQUENCES[op].program()
    return machine.run(insns, events)
