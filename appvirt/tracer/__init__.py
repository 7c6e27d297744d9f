"""Everything that touches a real tracee: ptrace, seccomp, memory, the launcher and the loop."""
