"""Write the seccomp filter appvirt installs for a policy (first run of the app: an empty
overlay) as struct sock_filter[], for limit_tracer.c: with the calls appvirt's compiled loop
takes as notifications notifying, as appvirt's does here (APPVIRT_NOTIFY=0: none).

    python3 bench/limit_filter.py POLICY.yaml OUT.bin
"""

import struct
import sys

from appvirt.handlers import TABLE
from appvirt.policy import load_policy
from appvirt.tracer import fastpath, seccomp

policy = load_policy(sys.argv[1])
traced = TABLE.traced_for(policy)
seccomp.check_available()
prog = seccomp.build_filter(TABLE, traced, fastpath.notified(policy, traced))
with open(sys.argv[2], "wb") as f:
    f.write(b"".join(struct.pack("<HBBI", i.code, i.jt, i.jf, i.k) for i in prog))
