"""Well-known keys: where appvirt keeps the virtual machine state of a sandboxed app.

The store is the one home of that state; the tracer's system-operation handlers read and write
these keys, and `appvirt reg APP ls machine` shows them. Values listed in `WELL_KNOWN` have a
fixed type that every write (API, CLI, import, file written in the sandbox) must respect;
a wrong type is a `WrongType` error (EINVAL inside the sandbox).

    machine/clock            offset_ns, rate_ppm, frozen_at_ns
    machine/uts              hostname, domainname
    machine/identity         uid, gid, euid, egid, groups, user
    machine/modules/NAME     params, size            (the key exists while NAME is "loaded")
    machine/sysctl/DIR...    NAME                    (/proc/sys/DIR.../NAME, see procsys.py)
    app/...                  the application's own settings, free-form
"""

from typing import NamedTuple

from .keys import join
from .values import ValueType

MACHINE_KEY = "machine"
APP_KEY = "app"

CLOCK_KEY = "machine/clock"
CLOCK_OFFSET_NS = "offset_ns"        # virtual CLOCK_REALTIME = host CLOCK_REALTIME + offset_ns
CLOCK_RATE_PPM = "rate_ppm"          # virtual seconds per real second, in millionths (1000000)
CLOCK_FROZEN_AT_NS = "frozen_at_ns"  # when present, CLOCK_REALTIME reads this fixed value

UTS_KEY = "machine/uts"
UTS_HOSTNAME = "hostname"            # what uname(2) and gethostname(2) report
UTS_DOMAINNAME = "domainname"        # the NIS domain name (setdomainname(2))

IDENTITY_KEY = "machine/identity"
IDENTITY_UID = "uid"                 # real user id the program sees
IDENTITY_GID = "gid"
IDENTITY_EUID = "euid"               # effective ids after a virtualized setuid(2)/setgid(2)
IDENTITY_EGID = "egid"
IDENTITY_GROUPS = "groups"           # supplementary group ids, decimal, one per item
IDENTITY_USER = "user"               # the login name reported for uid

MODULES_KEY = "machine/modules"
MODULE_PARAMS = "params"             # "name=value" items as given to init_module(2)
MODULE_SIZE = "size"                 # bytes of the module's (decompressed) image

SYSCTL_KEY = "machine/sysctl"


def module_key(module: str) -> str:
    """The key of a virtually loaded kernel module (its existence means "loaded")."""
    return join(MODULES_KEY, module)


class WellKnownValue(NamedTuple):
    key: str
    name: str
    type: ValueType
    doc: str


WELL_KNOWN: tuple[WellKnownValue, ...] = (
    WellKnownValue(CLOCK_KEY, CLOCK_OFFSET_NS, ValueType.INTEGER,
                   "nanoseconds added to the host's CLOCK_REALTIME (set by `date -s`)"),
    WellKnownValue(CLOCK_KEY, CLOCK_RATE_PPM, ValueType.INTEGER,
                   "speed of the virtual clock in millionths (1000000 = real time)"),
    WellKnownValue(CLOCK_KEY, CLOCK_FROZEN_AT_NS, ValueType.INTEGER,
                   "when present, CLOCK_REALTIME is frozen at this many ns since the epoch"),
    WellKnownValue(UTS_KEY, UTS_HOSTNAME, ValueType.STRING, "host name (sethostname)"),
    WellKnownValue(UTS_KEY, UTS_DOMAINNAME, ValueType.STRING, "NIS domain name"),
    WellKnownValue(IDENTITY_KEY, IDENTITY_UID, ValueType.INTEGER, "real user id"),
    WellKnownValue(IDENTITY_KEY, IDENTITY_GID, ValueType.INTEGER, "real group id"),
    WellKnownValue(IDENTITY_KEY, IDENTITY_EUID, ValueType.INTEGER, "effective user id"),
    WellKnownValue(IDENTITY_KEY, IDENTITY_EGID, ValueType.INTEGER, "effective group id"),
    WellKnownValue(IDENTITY_KEY, IDENTITY_GROUPS, ValueType.MULTI,
                   "supplementary group ids, decimal"),
    WellKnownValue(IDENTITY_KEY, IDENTITY_USER, ValueType.STRING, "login name"),
)

_TYPES = {(w.key, w.name): w.type for w in WELL_KNOWN}


def expected_type(key: str, name: str) -> ValueType | None:
    """The fixed type of a well-known value, or None when any type is allowed."""
    t = _TYPES.get((key, name))
    if t is None and key.startswith(MODULES_KEY + "/") \
            and key.count("/") == MODULES_KEY.count("/") + 1:
        return {MODULE_PARAMS: ValueType.MULTI, MODULE_SIZE: ValueType.INTEGER}.get(name)
    return t
