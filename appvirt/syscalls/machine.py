"""Machine calls: host name, reboot and kernel modules (handlers in handlers/machine.py).

None of them ever reaches the kernel (the table's NEVER_PROCEED guard refuses them even if a
handler allowed one by mistake).
"""

from __future__ import annotations

from ..core.table import OpClass, Support, SyscallEntry


def _uts_virtual(policy) -> bool:
    return policy.uts.virtual


def _m(name: str, enabled=None, note: str = "", support=Support.FULL, **kw) -> SyscallEntry:
    return SyscallEntry(name, OpClass.SYSTEM, "appvirt.handlers.machine", support, note,
                        enabled=enabled, **kw)


_MODULE_NOTE = "recorded in the store under `modules: virtual` (machine/modules); else EPERM"
_NAME_NOTE = "changes the app's virtual name (machine/uts); EPERM without a hostname: section"
ENTRIES: tuple[SyscallEntry, ...] = (
    _m("uname", _uts_virtual, "reports the app's virtual host and domain name"),
    _m("sethostname", None, _NAME_NOTE),
    _m("setdomainname", None, _NAME_NOTE),
    _m("init_module", None, _MODULE_NOTE),
    _m("finit_module", None, _MODULE_NOTE),
    _m("delete_module", None, _MODULE_NOTE),
    _m("reboot", None, "ends or restarts the sandboxed tree (`reboot:`); EPERM by default"),
)
