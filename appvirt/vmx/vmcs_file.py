"""VMCS files: YAML -> validated `Vmcs` (see docs/vmexit.md for the format).

Controls are named by their SDM names in lower snake case (`hlt_exiting`); numbers may be
written in hex; sizes as `4K`/`2M`/`1G`; ports as `0x70` or `0x1f0-0x1f7`; MSRs by number or
by name (`IA32_EFER`); exception vectors by mnemonic (`PF`, `#GP`) or number.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

from .bitmaps import IoBitmaps, MsrBitmap, msr_bit_position
from .controls import EntryCtl, ExitCtl, Msr, PinCtl, ProcCtl, Proc2Ctl, Vector
from .vmcs import (
    CrShadowing, EptAccess, EptConfig, EptMemoryType, EptRange, HostState, Memslot, MmioRange,
    MsrAreas, MsrEntry, Vmcs, VmxCapabilities,
)
from .yamlsrc import PathItem, config_error, load_yaml, validate

U64 = {"type": "integer", "minimum": 0, "maximum": (1 << 64) - 1}
U32 = {"type": "integer", "minimum": 0, "maximum": (1 << 32) - 1}
SIZE = {"oneOf": [{"type": "integer", "minimum": 1},
                  {"type": "string", "pattern": r"^[0-9]+[KMG]$"}],
        "description": "a byte count or a size such as 4K, 2M, 1G"}
PORTS = {"oneOf": [{"type": "integer", "minimum": 0, "maximum": 0xFFFF},
                   {"type": "string", "pattern": r"^(0x[0-9a-fA-F]+|[0-9]+)(-(0x[0-9a-fA-F]+|[0-9]+))?$"}],
         "description": "a port (0x70) or an inclusive range (0x1f0-0x1f7)"}
MSR = {"oneOf": [U32, {"type": "string", "enum": [m.name for m in Msr]}],
       "description": "an MSR number or a name such as IA32_EFER"}
VECTOR = {"oneOf": [{"type": "integer", "minimum": 0, "maximum": 31},
                    {"type": "string", "pattern": r"^#?(" + "|".join(v.name for v in Vector) + ")$"}],
          "description": "an exception vector 0-31 or a mnemonic such as PF or #GP"}
ACCESS = {"type": "string", "pattern": r"^(none|r?w?x?)$", "description": "'none' or letters of rwx"}


def _flags(enum_type: type) -> dict[str, Any]:
    return {"type": "array", "uniqueItems": True,
            "items": {"type": "string", "enum": [m.name.lower() for m in enum_type]}}


def _obj(props: dict[str, Any], required: Iterable[str] = ()) -> dict[str, Any]:
    return {"type": "object", "additionalProperties": False, "properties": props,
            "required": list(required)}


_MSR_LISTS = _obj({"exit": {"type": "array", "items": MSR}, "pass": {"type": "array", "items": MSR}})
_MSR_VALUE = {"type": "array", "items": _obj({"msr": MSR, "value": U64}, ["msr"])}

SCHEMA: dict[str, Any] = _obj({
    "name": {"type": "string"},
    "description": {"type": "string"},
    "pin_based": _flags(PinCtl),
    "primary": _flags(ProcCtl),
    "secondary": _flags(Proc2Ctl),
    "vm_exit": _flags(ExitCtl),
    "vm_entry": _flags(EntryCtl),
    "exception_bitmap": {"oneOf": [U32, {"type": "array", "items": VECTOR}],
                         "description": "a 32-bit mask or a list of vectors"},
    "page_fault": _obj({"mask": U32, "match": U32}),
    "io_bitmaps": _obj({"all": {"type": "boolean"}, "exit_ports": {"type": "array", "items": PORTS},
                        "pass_ports": {"type": "array", "items": PORTS}}),
    "msr_bitmap": _obj({"default": {"enum": ["exit", "pass"]}, "read": _MSR_LISTS,
                        "write": _MSR_LISTS}),
    "cr0": _obj({"mask": U64, "shadow": U64}),
    "cr4": _obj({"mask": U64, "shadow": U64}),
    "cr3_targets": _obj({"count": {"type": "integer", "minimum": 0, "maximum": 255},
                         "values": {"type": "array", "items": U64, "maxItems": 4}}),
    "tsc": _obj({"offset": {"type": "integer", "minimum": -(1 << 63), "maximum": (1 << 64) - 1},
                 "multiplier": U64}),
    "preemption_timer": _obj({"value": U32}),
    "pause_loop": _obj({"gap": U32, "window": U32}),
    "tpr_threshold": U32,
    "vpid": {"type": "integer", "minimum": 0, "maximum": 0xFFFF},
    "eoi_exit_vectors": {"type": "array", "uniqueItems": True,
                         "items": {"type": "integer", "minimum": 0, "maximum": 255}},
    "ept": _obj({
        "memory_type": {"enum": ["uc", "wb", 0, 1, 2, 3, 4, 5, 6, 7]},
        "walk_length": {"type": "integer", "minimum": 1, "maximum": 8},
        "accessed_dirty": {"type": "boolean"},
        "map_on_demand": {"type": "boolean"},
        "memslots": {"type": "array", "items": _obj(
            {"guest_physical": U64, "size": SIZE, "host_physical": U64},
            ["guest_physical", "size", "host_physical"])},
        "map": {"type": "array", "items": _obj(
            {"guest_physical": U64, "size": SIZE, "host_physical": U64, "access": ACCESS,
             "memory_type": {"type": "integer", "minimum": 0, "maximum": 7}},
            ["guest_physical"])},
        "mmio": {"type": "array", "items": _obj(
            {"guest_physical": U64, "size": SIZE, "name": {"type": "string"},
             "fast": {"type": "boolean"}}, ["guest_physical", "name"])},
    }),
    "msr_areas": _obj({"exit_store": {"type": "array", "items": MSR}, "exit_load": _MSR_VALUE,
                       "entry_load": _MSR_VALUE}),
    "host": _obj({k: U64 for k in ("cr0", "cr3", "cr4", "rip", "rsp", "efer")}),
    "cpu": _obj({"ept_execute_only": {"type": "boolean"}, "ept_accessed_dirty": {"type": "boolean"},
                 "ept_advanced_exit_info": {"type": "boolean"}, "pages_1g": {"type": "boolean"},
                 "maxphyaddr": {"type": "integer", "minimum": 36, "maximum": 52},
                 "preemption_timer_rate": {"type": "integer", "minimum": 0, "maximum": 31},
                 "cr3_target_max": {"type": "integer", "minimum": 0, "maximum": 255}}),
    "hypervisor_signature": {"type": "string", "maxLength": 12},
})


# -- value parsers --------------------------------------------------------------------------------

def parse_size(value: int | str) -> int:
    if isinstance(value, int):
        return value
    unit = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}[value[-1]]
    return int(value[:-1]) * unit


def parse_ports(values: Iterable[int | str]) -> list[int]:
    out: list[int] = []
    for v in values:
        if isinstance(v, int):
            out.append(v)
            continue
        lo, _, hi = v.partition("-")
        first, last = int(lo, 0), int(hi, 0) if hi else int(lo, 0)
        out.extend(range(first, last + 1))
    return out


def parse_msr(value: int | str) -> int:
    return int(Msr[value]) if isinstance(value, str) else value


def parse_vector(value: int | str) -> int:
    return value if isinstance(value, int) else int(Vector[value.lstrip("#")])


def parse_access(text: str) -> EptAccess:
    if text == "none":
        return EptAccess.NONE
    return EptAccess(sum(int(EptAccess[c.upper()]) for c in set(text)))


def _flag_value(enum_type: type, names: Iterable[str]) -> Any:
    value = enum_type(0)
    for name in names:
        value |= enum_type[name.upper()]
    return value


# -- building ------------------------------------------------------------------------------------

class _Builder:
    def __init__(self, data: dict[str, Any], file: str, node: yaml.Node | None) -> None:
        self.data, self.file, self.node = data, file, node

    def error(self, path: list[PathItem], message: str) -> Exception:
        return config_error(self.file, self.node, path, message)

    def build(self) -> Vmcs:
        d = self.data
        pf = d.get("page_fault", {})
        eb = d.get("exception_bitmap", 0)
        if isinstance(eb, list):
            eb = sum(1 << parse_vector(v) for v in set(eb))
        targets = d.get("cr3_targets", {})
        tsc = d.get("tsc", {})
        ple = d.get("pause_loop", {})
        defaults = Vmcs()
        host = HostState(**{**_host_defaults(), **d.get("host", {})})
        caps = VmxCapabilities(**d.get("cpu", {}))
        return Vmcs(
            name=d.get("name", Path(self.file).stem),
            pin=_flag_value(PinCtl, d.get("pin_based", [])),
            proc=_flag_value(ProcCtl, d.get("primary", [])),
            proc2=_flag_value(Proc2Ctl, d.get("secondary", [])),
            exit_ctl=_flag_value(ExitCtl, d.get("vm_exit", ["host_address_space_size"])),
            entry_ctl=_flag_value(EntryCtl, d.get("vm_entry", ["ia32e_mode_guest"])),
            exception_bitmap=eb, pfec_mask=pf.get("mask", 0), pfec_match=pf.get("match", 0),
            io_bitmaps=self._io(d.get("io_bitmaps", {})),
            msr_bitmap=self._msr_bitmap(d.get("msr_bitmap", {})),
            cr0=CrShadowing(**d.get("cr0", {})), cr4=CrShadowing(**d.get("cr4", {})),
            cr3_target_count=targets.get("count", 0),
            cr3_targets=tuple(targets.get("values", ())),
            tsc_offset=_signed64(tsc.get("offset", 0)),
            tsc_multiplier=tsc.get("multiplier", defaults.tsc_multiplier),
            preemption_timer=d.get("preemption_timer", {}).get("value", 0),
            tpr_threshold=d.get("tpr_threshold", 0),
            ple_gap=ple.get("gap", defaults.ple_gap), ple_window=ple.get("window", defaults.ple_window),
            vpid=d.get("vpid", defaults.vpid),
            eoi_exit_vectors=frozenset(d.get("eoi_exit_vectors", ())), ept=self._ept(d.get("ept", {})),
            msr_areas=self._areas(d.get("msr_areas", {})), host=host, caps=caps,
            hypervisor_signature=d.get("hypervisor_signature", defaults.hypervisor_signature)
            .ljust(12, "\0"),
            source=self.file)

    def _io(self, d: dict[str, Any]) -> IoBitmaps:
        ports = parse_ports(d.get("pass_ports" if d.get("all") else "exit_ports", []))
        if d.get("all") and d.get("exit_ports"):
            raise self.error(["io_bitmaps", "exit_ports"], "'exit_ports' is redundant with "
                             "'all: true' (use 'pass_ports' for exceptions)")
        return IoBitmaps.from_ports(ports, all_set=bool(d.get("all")))

    def _msr_bitmap(self, d: dict[str, Any]) -> MsrBitmap:
        lists: dict[str, list[int]] = {}
        for op in ("read", "write"):
            for what in ("exit", "pass"):
                msrs = [parse_msr(m) for m in d.get(op, {}).get(what, [])]
                for i, msr in enumerate(msrs):
                    if msr_bit_position(msr, op == "write") is None:
                        raise self.error(["msr_bitmap", op, what, i],
                                         f"MSR {msr:#x} is outside both bitmap ranges "
                                         "(0-0x1fff, 0xc0000000-0xc0001fff): it always exits")
                lists[f"{op}_{what}"] = msrs
        return MsrBitmap.build(default_exit=d.get("default", "pass") == "exit", **lists)

    def _ept(self, d: dict[str, Any]) -> EptConfig:
        mt = d.get("memory_type", "wb")
        memory_type = {"uc": EptMemoryType.UC, "wb": EptMemoryType.WB}.get(mt, mt)
        slots = tuple(Memslot(s["guest_physical"], parse_size(s["size"]), s["host_physical"])
                      for s in d.get("memslots", []))
        ranges = []
        for i, m in enumerate(d.get("map", [])):
            gpa, size = m["guest_physical"], parse_size(m.get("size", 4096))
            if gpa % 4096 or size % 4096:
                raise self.error(["ept", "map", i], "guest_physical and size must be multiples "
                                                    "of 4 KiB")
            hpa = m.get("host_physical")
            if hpa is None:
                slot = next((s for s in slots if s.guest_physical <= gpa < s.guest_physical + s.size), None)
                hpa = slot.host_physical + (gpa - slot.guest_physical) if slot else gpa
            ranges.append(EptRange(gpa, size, hpa, parse_access(m.get("access", "rwx")),
                                   m.get("memory_type", int(EptMemoryType.WB))))
        mmio = tuple(MmioRange(m["guest_physical"], parse_size(m.get("size", 4096)), m["name"],
                               m.get("fast", False)) for m in d.get("mmio", []))
        return EptConfig(memory_type=memory_type, walk_length=d.get("walk_length", 4),
                         accessed_dirty=d.get("accessed_dirty", False), ranges=tuple(ranges),
                         mmio=mmio, memslots=slots, map_on_demand=d.get("map_on_demand", True))

    def _areas(self, d: dict[str, Any]) -> MsrAreas:
        return MsrAreas(tuple(parse_msr(m) for m in d.get("exit_store", [])),
                        tuple(MsrEntry(parse_msr(e["msr"]), e.get("value", 0))
                              for e in d.get("exit_load", [])),
                        tuple(MsrEntry(parse_msr(e["msr"]), e.get("value", 0))
                              for e in d.get("entry_load", [])))


def _host_defaults() -> dict[str, int]:
    h = HostState()
    return {"cr0": h.cr0, "cr3": h.cr3, "cr4": h.cr4, "rip": h.rip, "rsp": h.rsp, "efer": h.efer}


def _signed64(value: int) -> int:
    return value - (1 << 64) if value >= 1 << 63 else value


def vmcs_from_data(data: Any, *, file: str = "<vmcs>", node: yaml.Node | None = None) -> Vmcs:
    """Validate and build a VMCS from parsed YAML data."""
    if data is None:
        data = {}
    validate(data, SCHEMA, node, file)
    return _Builder(data, file, node).build()


def load_vmcs(path: str | Path) -> Vmcs:
    """Load a VMCS file.

    Raises:
        VmxConfigError: file:line: key.path: what was expected.
    """
    p = Path(path)
    data, node = load_yaml(p)
    return vmcs_from_data(data, file=str(p), node=node)


def vmcs_from_text(text: str, file: str = "<vmcs>") -> Vmcs:
    """Build a VMCS from YAML text (profiles and tests)."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise config_error(file, None, [], f"invalid YAML: {e}") from None
    return vmcs_from_data(data, file=file, node=node)
