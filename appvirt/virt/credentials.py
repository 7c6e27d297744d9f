"""A virtual process identity: the get*id/set*id/setgroups/capget/capset family as pure logic.

The rules are the kernel's own (kernel/sys.c, kernel/groups.c, kernel/capability.c,
security/commoncap.c) for a task in the initial user namespace, with no LSM beyond
capabilities and no securebits except keep_caps, so a sandbox can answer these calls for an
identity the program only believes it has. Every change returns (new credentials, result),
result being what the syscall would return: >= 0, or -errno.
"""

from __future__ import annotations

import errno
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

NO_ID = 0xFFFFFFFF          # (uid_t)-1: "leave unchanged" in setre*/setres*; invalid elsewhere
NGROUPS_MAX = 65536

CAP_CHOWN, CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH, CAP_FOWNER, CAP_FSETID = 0, 1, 2, 3, 4
CAP_SETGID, CAP_SETUID, CAP_SETPCAP, CAP_LINUX_IMMUTABLE = 6, 7, 8, 9
CAP_MKNOD, CAP_MAC_OVERRIDE = 27, 32


def _cap_last_cap() -> int:
    try:
        return int(Path("/proc/sys/kernel/cap_last_cap").read_text())
    except (OSError, ValueError):
        return 40


CAP_LAST_CAP = _cap_last_cap()
CAP_VALID_MASK = (1 << (CAP_LAST_CAP + 1)) - 1     # capset silently drops bits beyond it
# include/linux/capability.h: CAP_FS_SET = CAP_FS_MASK | CAP_LINUX_IMMUTABLE; these follow fsuid
CAP_FS_SET = sum(1 << c for c in (CAP_CHOWN, CAP_MKNOD, CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH,
                                  CAP_FOWNER, CAP_FSETID, CAP_MAC_OVERRIDE, CAP_LINUX_IMMUTABLE))

Ids = tuple[int, int, int, int]         # real, effective, saved, fs


def _u32(v: int) -> int:
    return v & 0xFFFFFFFF               # the kernel sees only the low 32 bits of the register


def _set_id(old: Ids, x: int, can: bool) -> Ids | int:
    """setuid/setgid: privileged sets all four; otherwise only to the real or saved id."""
    r, e, s, _ = old
    if x == NO_ID:
        return -errno.EINVAL
    if can:
        return (x, x, x, x)
    return (r, x, s, x) if x in (r, s) else -errno.EPERM


def _set_re(old: Ids, nr: int, ne: int, can: bool) -> Ids | int:
    r, e, s, _ = old
    if nr != NO_ID and not (can or nr in (r, e)):
        return -errno.EPERM
    if ne != NO_ID and not (can or ne in (r, e, s)):
        return -errno.EPERM
    r2 = r if nr == NO_ID else nr
    e2 = e if ne == NO_ID else ne
    # saved id follows the new effective one when the real id is given or the effective id
    # moves to something other than the *old* real id
    s2 = e2 if nr != NO_ID or (ne != NO_ID and ne != r) else s
    return (r2, e2, s2, e2)


def _set_res(old: Ids, new: tuple[int, int, int], can: bool) -> Ids | int:
    r, e, s, fs = old
    nr, ne, ns = new
    # the no-op shortcut (Linux 6.3+) returns before fs follows e: a distinct fs id survives
    # setres*id(-1, -1, -1) but not setres*id(-1, e, -1)
    if nr in (NO_ID, r) and (ne == NO_ID or ne == e == fs) and ns in (NO_ID, s):
        return old
    if not can and any(x != NO_ID and x not in (r, e, s) for x in new):
        return -errno.EPERM
    e2 = e if ne == NO_ID else ne
    return (r if nr == NO_ID else nr, e2, s if ns == NO_ID else ns, e2)


def _set_fs(old: Ids, x: int, can: bool) -> int | None:
    """The new fs id, or None: setfs*id refuses silently and reports the old one anyway."""
    if x == NO_ID or x == old[3] or not (can or x in old):
        return None
    return x


@dataclass(frozen=True, slots=True)
class Credentials:
    ruid: int
    euid: int
    suid: int
    fsuid: int
    rgid: int
    egid: int
    sgid: int
    fsgid: int
    groups: tuple[int, ...]             # sorted, duplicates kept: what getgroups returns
    cap_effective: int
    cap_permitted: int
    cap_inheritable: int
    keep_caps: bool = False
    # assumed full; a field only so a model can match a host whose bounding set is not
    cap_bounding: int = CAP_VALID_MASK

    @classmethod
    def root(cls) -> Credentials:
        return cls(0, 0, 0, 0, 0, 0, 0, 0, (), CAP_VALID_MASK, CAP_VALID_MASK, 0)

    @classmethod
    def user(cls, uid: int, gid: int, groups: Sequence[int] = ()) -> Credentials:
        caps = CAP_VALID_MASK if uid == 0 else 0
        return cls(uid, uid, uid, uid, gid, gid, gid, gid, tuple(sorted(groups)), caps, caps, 0)

    def capable(self, cap: int) -> bool:
        return bool(self.cap_effective >> cap & 1)

    # --- ids ---------------------------------------------------------------------------------
    def _uids(self) -> Ids:
        return (self.ruid, self.euid, self.suid, self.fsuid)

    def _gids(self) -> Ids:
        return (self.rgid, self.egid, self.sgid, self.fsgid)

    def _with_uids(self, ids: Ids | int) -> tuple[Credentials, int]:
        if isinstance(ids, int):
            return self, ids
        r, e, s, fs = ids
        new = replace(self, ruid=r, euid=e, suid=s, fsuid=fs)
        # cap_emulate_setxuid(); it never looks at fsuid: only setfsuid moves the FS set, so
        # another call taking fsuid back to 0 does not restore it
        eff, prm = new.cap_effective, new.cap_permitted
        if 0 in self._uids()[:3] and 0 not in ids[:3] and not self.keep_caps:
            eff = prm = 0
        if self.euid == 0 and e != 0:
            eff = 0
        elif self.euid != 0 and e == 0:
            eff = prm
        return replace(new, cap_effective=eff, cap_permitted=prm), 0

    def _with_gids(self, ids: Ids | int) -> tuple[Credentials, int]:
        if isinstance(ids, int):
            return self, ids
        r, e, s, fs = ids
        return replace(self, rgid=r, egid=e, sgid=s, fsgid=fs), 0

    def setuid(self, uid: int) -> tuple[Credentials, int]:
        return self._with_uids(_set_id(self._uids(), _u32(uid), self.capable(CAP_SETUID)))

    def setgid(self, gid: int) -> tuple[Credentials, int]:
        return self._with_gids(_set_id(self._gids(), _u32(gid), self.capable(CAP_SETGID)))

    def setreuid(self, r: int, e: int) -> tuple[Credentials, int]:
        return self._with_uids(_set_re(self._uids(), _u32(r), _u32(e), self.capable(CAP_SETUID)))

    def setregid(self, r: int, e: int) -> tuple[Credentials, int]:
        return self._with_gids(_set_re(self._gids(), _u32(r), _u32(e), self.capable(CAP_SETGID)))

    def setresuid(self, r: int, e: int, s: int) -> tuple[Credentials, int]:
        new = (_u32(r), _u32(e), _u32(s))
        return self._with_uids(_set_res(self._uids(), new, self.capable(CAP_SETUID)))

    def setresgid(self, r: int, e: int, s: int) -> tuple[Credentials, int]:
        new = (_u32(r), _u32(e), _u32(s))
        return self._with_gids(_set_res(self._gids(), new, self.capable(CAP_SETGID)))

    def setfsuid(self, uid: int) -> tuple[Credentials, int]:
        fs = _set_fs(self._uids(), _u32(uid), self.capable(CAP_SETUID))
        if fs is None:
            return self, self.fsuid
        eff = self.cap_effective        # cap_task_fix_setuid(LSM_SETID_FS)
        if self.fsuid == 0 and fs != 0:
            eff &= ~CAP_FS_SET
        elif self.fsuid != 0 and fs == 0:
            eff |= self.cap_permitted & CAP_FS_SET
        return replace(self, fsuid=fs, cap_effective=eff), self.fsuid

    def setfsgid(self, gid: int) -> tuple[Credentials, int]:
        fs = _set_fs(self._gids(), _u32(gid), self.capable(CAP_SETGID))
        return (self if fs is None else replace(self, fsgid=fs)), self.fsgid

    # --- groups ------------------------------------------------------------------------------
    def setgroups(self, groups: Sequence[int]) -> tuple[Credentials, int]:
        if not self.capable(CAP_SETGID):            # checked before the size
            return self, -errno.EPERM
        if len(groups) > NGROUPS_MAX:
            return self, -errno.EINVAL
        gs = tuple(sorted(_u32(g) for g in groups))
        if NO_ID in gs:                             # make_kgid() fails for (gid_t)-1
            return self, -errno.EINVAL
        return replace(self, groups=gs), 0

    def getgroups(self, size: int) -> tuple[int, list[int]]:
        size = _u32(size)
        size -= (size >> 31) << 32                  # the kernel's argument is an int
        n = len(self.groups)
        if size < 0 or 0 < size < n:
            return -errno.EINVAL, []
        return n, (list(self.groups) if size else [])

    # --- capabilities ------------------------------------------------------------------------
    def capset(self, effective: int, permitted: int, inheritable: int) -> tuple[Credentials, int]:
        e, p, i = (m & CAP_VALID_MASK for m in (effective, permitted, inheritable))
        old_i = self.cap_inheritable
        if (not self.capable(CAP_SETPCAP) and i & ~(old_i | self.cap_permitted)
                or i & ~(old_i | self.cap_bounding)     # even CAP_SETPCAP: never beyond bset
                or p & ~self.cap_permitted or e & ~p):
            return self, -errno.EPERM
        return replace(self, cap_effective=e, cap_permitted=p, cap_inheritable=i), 0

    def after_exec(self, *, setuid_owner: int | None = None,
                   setgid_group: int | None = None) -> Credentials:
        """execve of a file without file capabilities (cap_bprm_creds_from_file)."""
        euid = self.euid if setuid_owner is None else _u32(setuid_owner)
        egid = self.egid if setgid_group is None else _u32(setgid_group)
        # handle_privileged_root(): a real *or* effective root gets pP' = bset | pI,
        # but only an effective root gets it in pE'
        prm = (self.cap_bounding | self.cap_inheritable) if 0 in (euid, self.ruid) else 0
        return replace(self, euid=euid, suid=euid, fsuid=euid, egid=egid, sgid=egid,
                       fsgid=egid, cap_permitted=prm, cap_effective=prm if euid == 0 else 0,
                       keep_caps=False)
