"""The sandbox core: syscall numbers, the syscall table, decoded stops and actions."""
