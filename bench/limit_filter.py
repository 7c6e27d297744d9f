"""Write the seccomp filter appvirt installs for a policy (first run of the app: an empty
overlay) as struct sock_filter[], for limit_tracer.c: with the calls appvirt's compiled loop
takes as notifications notifying, as appvirt's does here (APPVIRT_NOTIFY=0: none), or with
--notify-all every call it traces notifying but the execs (the floor of a design with no
ptrace stop on the hot path): the tracer takes the listener at the program's first exec's
stop, as appvirt does, and an exec is where a sandbox maps itself into the new program.

    python3 bench/limit_filter.py [--notify-all] POLICY.yaml OUT.bin
"""

import struct
import sys

from appvirt.handlers import TABLE
from appvirt.policy import load_policy
from appvirt.tracer import fastpath, seccomp

args = sys.argv[1:]
notify_all = args[:1] == ["--notify-all"]
if notify_all:
    args = args[1:]
if len(args) != 2:
    raise SystemExit(__doc__)
policy = load_policy(args[0])
traced = TABLE.traced_for(policy)
seccomp.check_available()
notified = fastpath.notified(policy, traced)
if notify_all:
    if notified is None:
        raise SystemExit("limit_filter: no seccomp user notification here (APPVIRT_NOTIFY=0, "
                         "or a kernel before 5.19)")
    notified = notified._replace(calls=frozenset(traced.keys() - {"execve", "execveat"}))
prog = seccomp.build_filter(TABLE, traced, notified)
with open(args[1], "wb") as f:
    f.write(b"".join(struct.pack("<HBBI", i.code, i.jt, i.jf, i.k) for i in prog))
