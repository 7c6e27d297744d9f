"""Write the seccomp filter appvirt installs for a policy (first run of the app: an empty
overlay) as struct sock_filter[], for limit_tracer.c.

    python3 bench/limit_filter.py POLICY.yaml OUT.bin
"""

import struct
import sys

from appvirt.handlers import TABLE
from appvirt.policy import load_policy
from appvirt.tracer import seccomp

prog = seccomp.build_filter(TABLE, TABLE.traced_for(load_policy(sys.argv[1])))
with open(sys.argv[2], "wb") as f:
    f.write(b"".join(struct.pack("<HBBI", i.code, i.jt, i.jf, i.k) for i in prog))
