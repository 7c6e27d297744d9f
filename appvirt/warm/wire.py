"""The warm server's messages: a 4-byte length and a marshalled tuple whose first item names
it, the standard fds of a run riding on the request (SCM_RIGHTS). Builtin modules only: the
client imports this before anything else.

client -> server: ("run", ORIGIN, argv, environb) with fds 0, 1, 2, or "run-here" the same
(the client forks the program: tracer/clientspawn.py gives the messages between); ("status",);
("stop",).
server -> client: ("refused", reason); ("pid", tracer_pid); ("exit", code) from the tracer
at the run's end, else ("status", waitstatus) from the server when the tracer died first;
("status", served, refused, last_refusal, running, server_pid, served_by_a_spare,
spare_state, spare_pid) or ("stopping",) answering the others.
server -> its spare tracer (spare.py): ("run", client_pid, umask, argv, environb, here) with
the client's connection and its fds 0, 1, 2; the spare's one word before it, the byte "r"
(ready), is not a message.
"""

import _socket
import marshal
import os
import sys

SOCKET_NAME = "server.sock"     # in $APPVIRT_HOME/run
MAX_MESSAGE = 16 << 20          # an environment of megabytes is refused, not read forever
_FD_BYTES = 4


def send(sock, message: tuple, fds: tuple[int, ...] = ()) -> None:
    data = marshal.dumps(message)
    data = len(data).to_bytes(4, "little") + data
    if fds:
        rights = b"".join(fd.to_bytes(_FD_BYTES, sys.byteorder) for fd in fds)
        sent = sock.sendmsg([data], [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS, rights)])
        data = data[sent:]
    if data:
        sock.sendall(data)


def receive(sock, max_fds: int = 0) -> tuple[tuple, list[int]] | None:
    """One message and the fds that came with it; None at the end of the stream."""
    fds: list[int] = []
    if max_fds:
        head, ancillary, _flags, _addr = sock.recvmsg(4, _socket.CMSG_SPACE(max_fds * _FD_BYTES))
        for level, kind, payload in ancillary:
            if level == _socket.SOL_SOCKET and kind == _socket.SCM_RIGHTS:
                fds += [int.from_bytes(payload[i:i + _FD_BYTES], sys.byteorder)
                        for i in range(0, len(payload) - _FD_BYTES + 1, _FD_BYTES)]
    else:
        head = sock.recv(4)
    try:
        head += _exactly(sock, 4 - len(head)) if head else b""
        if not head:
            return None
        size = int.from_bytes(head, "little")
        if size > MAX_MESSAGE:
            raise ValueError(f"a message of {size} bytes")
        message = marshal.loads(_exactly(sock, size))
        if not isinstance(message, tuple) or not message or not isinstance(message[0], str):
            raise ValueError("not a message")
    except BaseException:
        for fd in fds:
            _close(fd)
        raise
    return message, fds


def _exactly(sock, size: int) -> bytes:
    parts = []
    while size:
        part = sock.recv(min(size, 1 << 20))
        if not part:
            raise EOFError("the connection closed inside a message")
        parts.append(part)
        size -= len(part)
    return b"".join(parts)


def _close(fd: int) -> None:
    try:
        os.close(fd)
    except OSError:
        pass
