"""The policy's `identity:` section and the virtual credentials of every sandboxed thread.

    identity: virtual-root                       # uid 0, gid 0, every capability
    identity: {uid: 1000, gid: 1000, groups: [27, 100]}

The kernel keeps credentials per task: a thread inherits its creator's, exec recomputes them
(a set-user-ID program's owner becomes the effective user), and the set*id calls change them
by the rules of credentials.py, without ever reaching the kernel: the program's real ids stay
appvirt's own.
"""

import os
import stat
from typing import TYPE_CHECKING, Any, NamedTuple

from ..store import Store, Value
from ..store.wellknown import (IDENTITY_EGID, IDENTITY_EUID, IDENTITY_GID, IDENTITY_GROUPS,
                               IDENTITY_KEY, IDENTITY_UID)

if TYPE_CHECKING:       # imported where used: only identity: policies need credentials
    from .credentials import Credentials

MAX_ID = 0xFFFFFFFE              # (uid_t)-1 is no id

IDENTITY_SCHEMA: dict[str, Any] = {
    "oneOf": [
        {"const": "virtual-root"},
        {"type": "object", "additionalProperties": False, "required": ["uid"],
         "properties": {
             "uid": {"type": "integer", "minimum": 0, "maximum": MAX_ID},
             "gid": {"type": "integer", "minimum": 0, "maximum": MAX_ID},
             "groups": {"type": "array", "maxItems": 65536, "uniqueItems": True,
                        "items": {"type": "integer", "minimum": 0, "maximum": MAX_ID}}}},
    ],
}


class IdentityPolicy(NamedTuple):
    uid: int
    gid: int
    groups: tuple[int, ...] = ()

    def start(self) -> "Credentials":
        """The credentials the program starts with: for uid 0, every capability appvirt's
        own bounding set holds, as a real root would have here."""
        from dataclasses import replace     # here: only runs with an identity use them

        from .credentials import Credentials
        creds = Credentials.user(self.uid, self.gid, self.groups)
        bounding = host_bounding_set()
        caps = bounding if self.uid == 0 else 0
        return replace(creds, cap_bounding=bounding, cap_effective=caps, cap_permitted=caps)


def host_bounding_set() -> int:
    from .credentials import CAP_VALID_MASK
    try:
        with open("/proc/self/status", "rb") as f:
            for line in f:
                if line.startswith(b"CapBnd:"):
                    return int(line.split()[1], 16)
    except (OSError, ValueError):
        pass
    return CAP_VALID_MASK


def identity_policy(section: Any) -> IdentityPolicy | None:
    if section is None:
        return None
    if section == "virtual-root":
        return IdentityPolicy(0, 0)
    return IdentityPolicy(section["uid"], section.get("gid", section["uid"]),
                          tuple(section.get("groups", ())))


class VirtualIdentity:
    """Credentials by thread id, following clone, exec and exit."""

    def __init__(self, start: "Credentials") -> None:
        self.start = start
        self.by_tid: dict[int, Credentials] = {}

    def record(self, store: Store, policy: IdentityPolicy) -> None:
        """Show the identity the program starts with in the store (machine/identity)."""
        start = self.start
        for name, value in ((IDENTITY_UID, start.ruid), (IDENTITY_GID, start.rgid),
                            (IDENTITY_EUID, start.euid), (IDENTITY_EGID, start.egid)):
            store.set(IDENTITY_KEY, name, Value.integer(value))
        store.set(IDENTITY_KEY, IDENTITY_GROUPS,
                  Value.multi([str(g) for g in policy.groups]))

    def of(self, tid: int, tgid: int | None = None) -> "Credentials":
        creds = self.by_tid.get(tid)
        if creds is None and tgid is not None:
            creds = self.by_tid.get(tgid)         # a thread seen before its creator's event
        return self.start if creds is None else creds

    def set(self, tid: int, creds: "Credentials") -> None:
        self.by_tid[tid] = creds

    def cloned(self, parent_tid: int, child_tid: int) -> None:
        self.by_tid[child_tid] = self.of(parent_tid)

    def execed(self, tid: int, former_tid: int, exe: os.stat_result | None,
               owner: tuple[int, int] | None = None) -> None:
        """tid now runs a new program (former_tid: the thread that called execve).
        `owner`: the program file's (uid, gid) as the sandbox sees it (default: exe's)."""
        creds = self.of(former_tid, tid)
        if former_tid != tid:
            self.by_tid.pop(former_tid, None)
        suid = sgid = None
        if exe is not None:
            uid, gid = owner or (exe.st_uid, exe.st_gid)
            if exe.st_mode & stat.S_ISUID:
                suid = uid
            if exe.st_mode & stat.S_ISGID and exe.st_mode & stat.S_IXGRP:
                sgid = gid
        self.by_tid[tid] = creds.after_exec(setuid_owner=suid, setgid_group=sgid)

    def gone(self, tid: int) -> None:
        self.by_tid.pop(tid, None)

    def status_file(self, path: bytes, is_member) -> bytes | None:
        """The content of /proc/PID/status or /proc/PID/task/TID/status of a sandboxed
        process, with its virtual credentials; None for any other path."""
        parts = path.split(b"/")
        if len(parts) == 4 and parts[1] == b"proc" and parts[3] == b"status":
            tid = parts[2]
        elif len(parts) == 6 and parts[1] == b"proc" and parts[3] == b"task" \
                and parts[5] == b"status":
            tid = parts[4]
        else:
            return None
        if not (parts[2].isdigit() and tid.isdigit() and is_member(int(tid))):
            return None
        try:
            with open(path, "rb") as f:
                real = f.read()
        except OSError:
            return None                     # gone: the kernel answers the open
        return self.proc_status(real, int(tid))

    def proc_status(self, real: bytes, tid: int) -> bytes:
        """/proc/PID/status with tid's virtual ids, groups and capabilities."""
        c = self.of(tid)
        lines = {b"Uid:": b"\t".join(b"%d" % i for i in (c.ruid, c.euid, c.suid, c.fsuid)),
                 b"Gid:": b"\t".join(b"%d" % i for i in (c.rgid, c.egid, c.sgid, c.fsgid)),
                 b"Groups:": b"".join(b"%d " % g for g in sorted(c.groups)),
                 b"CapInh:": b"%016x" % c.cap_inheritable,
                 b"CapPrm:": b"%016x" % c.cap_permitted,
                 b"CapEff:": b"%016x" % c.cap_effective}
        out = []
        for line in real.split(b"\n"):
            head = line.split(b"\t", 1)[0]
            out.append(head + b"\t" + lines[head] if head in lines else line)
        return b"\n".join(out)
