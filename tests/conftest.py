"""Shared fixtures. Integration tests need real ptrace and seccomp; they are skipped, with the
reason, only where the kernel refuses them (the check runs once per session)."""
