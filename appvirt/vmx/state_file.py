"""Guest-state files: registers, control registers, paging, memory contents and events.

Everything is optional; the defaults describe a 64-bit guest kernel at CPL 0 (CR0.PG, CR4.PAE,
CR4.VMXE, CR4.OSXSAVE, EFER.LMA set) with flat paging (see `paging.FLAT_WINDOW`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .guest import ActivityState, GuestState
from .memory import PAGE_4K, GuestPage, PhysicalMemory, build_guest_page_tables
from .program import EventKind, GuestEvent
from .registers import REGISTER_NAMES, Gpr
from .vmcs_file import MSR, PORTS, SIZE, U64, _obj, parse_msr, parse_ports, parse_size
from .yamlsrc import config_error, load_yaml, validate

_REGS = [g.name.lower() for g in Gpr]
DEFAULT_TABLES_AT = 0x0010_0000
DEFAULT_RSP = 0x8000

SCHEMA: dict[str, Any] = _obj({
    "description": {"type": "string"},
    "cpl": {"enum": [0, 3]},
    "rip": U64, "rflags": U64,
    "registers": {"type": "object", "additionalProperties": False,
                  "properties": {name: U64 for name in _REGS}},
    **{name: U64 for name in ("cr0", "cr2", "cr3", "cr4", "cr8", "efer", "dr7", "fs_base",
                              "gs_base", "kernel_gs_base", "tsc", "xcr0")},
    "tsc_per_instruction": {"type": "integer", "minimum": 0},
    "msrs": {"type": "array", "items": _obj({"msr": MSR, "value": U64}, ["msr", "value"])},
    "interruptibility": _obj({"sti": {"type": "boolean"}, "mov_ss": {"type": "boolean"},
                              "nmi": {"type": "boolean"}}),
    "activity": {"enum": [a.name.lower() for a in ActivityState]},
    "monitor_armed": {"type": "boolean"},
    "tss_io_allowed": {"type": "array", "items": PORTS},
    "idt": {"enum": ["ok", "broken"]},
    "paging": _obj({
        "tables_at": U64,
        "pages": {"type": "array", "items": _obj({
            "linear": U64, "physical": U64, "size": SIZE, "present": {"type": "boolean"},
            "writable": {"type": "boolean"}, "user": {"type": "boolean"},
            "executable": {"type": "boolean"}, "accessed": {"type": "boolean"},
            "dirty": {"type": "boolean"}}, ["linear"])},
    }),
    "memory": {"type": "array", "items": _obj({
        "linear": U64, "physical": U64, "value": U64,
        "size": {"enum": [1, 2, 4, 8]}}, ["value"])},
    "events": {"type": "array", "items": _obj({
        "type": {"enum": [k.value for k in EventKind]},
        "before": {"type": "integer", "minimum": 0},
        "vector": {"type": "integer", "minimum": 0, "maximum": 255}}, ["type"])},
})


@dataclass
class GuestSetup:
    """A guest ready to run: its vCPU state, its memory, how paging is modelled, its events."""

    state: GuestState
    memory: PhysicalMemory = field(default_factory=PhysicalMemory)
    flat_paging: bool = True
    events: tuple[GuestEvent, ...] = ()
    rip_given: bool = False


def _linear_to_physical(pages: tuple[GuestPage, ...], linear: int) -> int | None:
    for page in pages:
        if page.present and page.linear <= linear < page.linear + page.size:
            return page.physical + (linear - page.linear)
    return None


def setup_from_data(data: Any, *, file: str = "<state>", node: yaml.Node | None = None) -> GuestSetup:
    """Validate and build a guest setup from parsed YAML data."""
    data = data or {}
    validate(data, SCHEMA, node, file)
    g = GuestState()
    g.set_reg(Gpr.RSP, DEFAULT_RSP)
    for name, value in data.get("registers", {}).items():
        g.write(REGISTER_NAMES[name], value)
    for key in ("cpl", "rip", "rflags", "cr0", "cr2", "cr3", "cr4", "cr8", "efer", "fs_base",
                "gs_base", "kernel_gs_base", "tsc", "xcr0", "tsc_per_instruction",
                "monitor_armed"):
        if key in data:
            setattr(g, key, data[key])
    if "dr7" in data:
        g.dr[7] = data["dr7"]
    for entry in data.get("msrs", []):
        g.write_msr(parse_msr(entry["msr"]), entry["value"])
    blocking = data.get("interruptibility", {})
    g.sti_blocking = blocking.get("sti", False)
    g.mov_ss_blocking = blocking.get("mov_ss", False)
    g.nmi_blocking = blocking.get("nmi", False)
    g.activity = ActivityState[data.get("activity", "active").upper()]
    g.tss_io_allowed = frozenset(parse_ports(data.get("tss_io_allowed", [])))
    g.idt_broken = data.get("idt", "ok") == "broken"

    memory = PhysicalMemory()
    paging = data.get("paging")
    pages: tuple[GuestPage, ...] = ()
    if paging is not None:
        pages = tuple(GuestPage(p["linear"], p.get("physical", 0), parse_size(p.get("size", PAGE_4K)),
                                p.get("present", True), p.get("writable", True),
                                p.get("user", False), p.get("executable", True),
                                p.get("accessed", False), p.get("dirty", False))
                      for p in paging.get("pages", []))
        for i, page in enumerate(pages):
            if page.size not in (PAGE_4K, 1 << 21, 1 << 30):
                raise config_error(file, node, ["paging", "pages", i, "size"],
                                   "expected 4K, 2M or 1G")
            if page.linear % page.size or (page.present and page.physical % page.size):
                raise config_error(file, node, ["paging", "pages", i],
                                   f"linear and physical must be aligned to the page size "
                                   f"{page.size:#x}")
        g.cr3 = build_guest_page_tables(memory, pages, paging.get("tables_at", DEFAULT_TABLES_AT))
    for i, item in enumerate(data.get("memory", [])):
        size = item.get("size", 8)
        if "physical" in item:
            gpa = item["physical"]
        elif "linear" in item:
            found = (_linear_to_physical(pages, item["linear"]) if paging is not None
                     else item["linear"] % (1 << 30))
            if found is None:
                raise config_error(file, node, ["memory", i, "linear"],
                                   f"linear address {item['linear']:#x} is not mapped by "
                                   "paging.pages")
            gpa = found
        else:
            raise config_error(file, node, ["memory", i], "give 'linear' or 'physical'")
        memory.write(gpa, size, item["value"])
    events = tuple(GuestEvent(EventKind(e["type"]), e.get("before", 0), e.get("vector", 0))
                   for e in data.get("events", []))
    return GuestSetup(g, memory, paging is None, events, "rip" in data)


def load_state(path: str | Path) -> GuestSetup:
    """Load a guest-state file.

    Raises:
        VmxConfigError: file:line: key.path: what was expected.
    """
    p = Path(path)
    data, node = load_yaml(p)
    return setup_from_data(data, file=str(p), node=node)


def default_setup() -> GuestSetup:
    return setup_from_data({})
