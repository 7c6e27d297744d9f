"""appvirt: an application-virtualization sandbox for Linux.

A program runs under ptrace with a seccomp-bpf filter; the system calls that matter stop in
the tracer, which allows, denies or virtualizes them according to a YAML policy and writes
every decision to an intercept log.
"""

__version__ = "0.1.0"
