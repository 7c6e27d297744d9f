"""Machine state: host name, reboot and kernel modules.

None of these calls ever reaches the kernel (the table's NEVER_PROCEED guard refuses them
even if a handler allowed one by mistake). What the policy virtualizes is kept in the app's
store, so that the program reads back what it did: `sethostname` is followed by a matching
`uname`, an `init_module` by a matching /proc/modules.
"""

from __future__ import annotations

import errno
import io

from ..core.action import Action, Allow, Decision, Deny, Emulate, Note
from ..core.context import Context
from ..core.stop import Stop
from ..store.wellknown import UTS_DOMAINNAME, UTS_HOSTNAME
from ..virt.machinepolicy import HOST_NAME_MAX, PowerEvent, RebootAction
from ..virt.modules import (INIT_COMPRESSED_FILE, INIT_FLAGS, MAX_IMAGE, MODULE_NAME_LEN,
                            read_module)

UTSNAME_SIZE = 6 * 65
CAP_SYS_MODULE, CAP_SYS_ADMIN, CAP_SYS_BOOT = 16, 21, 22
NEEDS_ADMIN = Note(rule="identity", detail="the program lacks CAP_SYS_ADMIN, as on a real machine")
HOST_UTS = Note(rule="builtin:host-name", hint="add `hostname: NAME` to the policy to give the "
                                              "program a host name it may set")


def sys_uname(stop: Stop, ctx: Context) -> Action:
    """Implement uname(2): the kernel's answer with the app's virtual host and domain name."""
    assert ctx.uts is not None
    rv, out = ctx.host_call("uname", (None,), {0: UTSNAME_SIZE})
    if rv < 0:
        return Allow()
    return Emulate(0, ((stop.arg(0), ctx.uts.patch_utsname(out[0])),),
                   decision=Decision.ALLOWED)


def _set_name(which: str):
    def handler(stop: Stop, ctx: Context) -> Action:
        if ctx.uts is None or not ctx.policy.uts.allow_set:
            return Deny(errno.EPERM, HOST_UTS)
        if not ctx.capable(stop.tid, CAP_SYS_ADMIN):
            return Deny(errno.EPERM, NEEDS_ADMIN)
        length = stop.sarg(1)
        if length < 0 or length > HOST_NAME_MAX:
            return Deny(errno.EINVAL, native=True)
        raw = ctx.read(stop.tid, stop.arg(0), length).split(b"\0")[0]
        try:
            name = raw.decode("utf-8")
        except UnicodeDecodeError:
            return Deny(errno.EINVAL, Note(rule="hostname",
                                           detail="appvirt keeps host names as UTF-8"))
        ctx.uts.set(which, name)
        return Emulate(0, note=Note(rule="hostname", detail=f"{which} set to {name!r}"))
    handler.__doc__ = f"Set the app's virtual {which} (kept in machine/uts)."
    return handler


# reboot(2)
REBOOT_MAGIC1 = 0xFEE1DEAD
REBOOT_MAGIC2 = frozenset({0x28121969, 0x05121996, 0x16041998, 0x20112000})
CMD_RESTART, CMD_RESTART2 = 0x01234567, 0xA1B2C3D4
CMD_HALT, CMD_POWER_OFF = 0xCDEF0123, 0x4321FEDC
CMD_CAD_ON, CMD_CAD_OFF, CMD_SW_SUSPEND = 0x89ABCDEF, 0x00000000, 0xD000FCE2
NO_REBOOT = Note(rule="reboot", hint="`reboot: exit` or `reboot: restart` lets the program "
                                     "switch its own sandboxed machine off or restart it")


def sys_reboot(stop: Stop, ctx: Context) -> Action:
    """Implement reboot(2) on the sandboxed machine: never the host's."""
    action = ctx.policy.reboot.action
    if action is RebootAction.DENY:
        return Deny(errno.EPERM, NO_REBOOT)
    if not ctx.capable(stop.tid, CAP_SYS_BOOT):
        return Deny(errno.EPERM, Note(rule="identity", detail="the program lacks CAP_SYS_BOOT"))
    if stop.arg(0) & 0xFFFFFFFF != REBOOT_MAGIC1 or stop.arg(1) & 0xFFFFFFFF not in REBOOT_MAGIC2:
        return Deny(errno.EINVAL, native=True)
    cmd = stop.arg(2) & 0xFFFFFFFF
    if cmd in (CMD_CAD_ON, CMD_CAD_OFF, CMD_SW_SUSPEND):
        return Emulate(0, note=Note(rule="reboot", detail="nothing to do on a sandboxed machine"))
    if cmd in (CMD_RESTART, CMD_RESTART2) and action is RebootAction.RESTART:
        event, what = PowerEvent.RESTART, "restart"
    elif cmd in (CMD_RESTART, CMD_RESTART2, CMD_HALT, CMD_POWER_OFF):
        event = PowerEvent.POWER_OFF
        what = {CMD_HALT: "halt", CMD_POWER_OFF: "power-off"}.get(cmd, "restart, as power-off")
    else:
        return Deny(errno.EINVAL, native=True)      # LINUX_REBOOT_CMD_KEXEC: no image loaded
    ctx.power(event, f"reboot({what}) by pid {stop.pid}")
    return Emulate(0, note=Note(rule="reboot", detail=f"the sandboxed machine: {what}"))


# kernel modules
MODULE_NOTE = Note(rule="modules", hint="`modules: virtual` lets the program load modules into "
                                        "its sandboxed machine (remembered, never loaded)")
MAX_PARAMS = 1 << 16


def _may_load(stop: Stop, ctx: Context) -> Deny | None:
    if ctx.modules is None:
        return Deny(errno.EPERM, MODULE_NOTE)
    if not ctx.capable(stop.tid, CAP_SYS_MODULE):
        return Deny(errno.EPERM, Note(rule="identity", detail="the program lacks CAP_SYS_MODULE"))
    return None


def _load(stop: Stop, ctx: Context, image, params_arg: int) -> Action:
    params = ctx.read_string(stop.tid, stop.arg(params_arg), MAX_PARAMS)
    mod = ctx.modules.load(image, params.decode("utf-8", "replace"), ctx.host_modules())
    return Emulate(0, note=Note(rule="modules", detail=f"virtual module {mod.name} loaded"
                                + (f" with {' '.join(mod.params)}" if mod.params else "")))


def sys_init_module(stop: Stop, ctx: Context) -> Action:
    """Implement init_module(2): the image in memory is checked and recorded, never loaded."""
    deny = _may_load(stop, ctx)
    if deny is not None:
        return deny
    size = stop.arg(1)
    if size > MAX_IMAGE:
        return Deny(errno.EFBIG, Note(rule="modules", detail="image larger than appvirt reads"))
    image = read_module(io.BytesIO(ctx.read(stop.tid, stop.arg(0), size)))
    return _load(stop, ctx, image, 2)


def sys_finit_module(stop: Stop, ctx: Context) -> Action:
    """Implement finit_module(2): the module file behind the fd is checked and recorded."""
    deny = _may_load(stop, ctx)
    if deny is not None:
        return deny
    flags = stop.arg(2) & 0xFFFFFFFF
    if flags & ~INIT_FLAGS:
        return Deny(errno.EINVAL, native=True)
    with ctx.open_fd(stop.tid, stop.sarg(0)) as f:
        image = read_module(f, compressed=bool(flags & INIT_COMPRESSED_FILE))
    return _load(stop, ctx, image, 1)


def sys_delete_module(stop: Stop, ctx: Context) -> Action:
    """Implement delete_module(2) for the app's virtual modules."""
    deny = _may_load(stop, ctx)
    if deny is not None:
        return deny
    raw = ctx.read_string(stop.tid, stop.arg(0), 4096)[:MODULE_NAME_LEN - 1]
    name = raw.decode("utf-8", "replace")
    ctx.modules.unload(name, ctx.host_modules())
    return Emulate(0, note=Note(rule="modules", detail=f"virtual module {name} removed"))


HANDLERS = {
    "uname": sys_uname,
    "sethostname": _set_name(UTS_HOSTNAME),
    "setdomainname": _set_name(UTS_DOMAINNAME),
    "init_module": sys_init_module,
    "finit_module": sys_finit_module,
    "delete_module": sys_delete_module,
    "reboot": sys_reboot,
}
