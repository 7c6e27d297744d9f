"""Network rules under real ptrace, loopback only: denied, allowed and redirected peers.

127.0.0.2 is denied, 127.0.0.3 allowed, 127.0.0.4 redirected to a mock server on 127.0.0.5.
Every listener counts what reaches it, so a denial is checked from the receiving side too.
"""

from __future__ import annotations

import http.server
import json
import shutil
import socket
import subprocess
import threading

import pytest

from ..conftest import write_policy

pytestmark = pytest.mark.integration


class Listener:
    """A TCP and a UDP socket on one loopback address that record what reaches them."""

    def __init__(self, host: str) -> None:
        self.tcp = socket.create_server((host, 0))
        self.port = self.tcp.getsockname()[1]
        self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.udp.bind((host, self.port))
        self.udp.settimeout(0.2)
        self.tcp.settimeout(0.2)
        self.connections = 0
        self.datagrams = 0

    def drain(self) -> None:
        for sock, kind in ((self.tcp, "tcp"), (self.udp, "udp")):
            while True:
                try:
                    if kind == "tcp":
                        conn, _ = sock.accept()
                        conn.close()
                        self.connections += 1
                    else:
                        sock.recv(100)
                        self.datagrams += 1
                except (TimeoutError, socket.timeout, BlockingIOError):
                    break

    def close(self) -> None:
        self.tcp.close()
        self.udp.close()


@pytest.fixture
def servers():
    denied, allowed = Listener("127.0.0.2"), Listener("127.0.0.3")

    class Hello(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = b"mock service\n"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    mock = http.server.ThreadingHTTPServer(("127.0.0.5", 0), Hello)
    t = threading.Thread(target=mock.serve_forever, daemon=True)
    t.start()
    yield denied, allowed, mock
    mock.shutdown()
    denied.close()
    allowed.close()


def _policy(tmp_path, denied, allowed, mock) -> str:
    return write_policy(tmp_path / "net.yaml", f"""
log: {{level: changes}}
network:
  preset: none
  rules:
    - {{to: 127.0.0.2, action: deny, errno: EACCES}}
    - {{to: 127.0.0.4, ports: 8080, action: redirect, redirect: '127.0.0.5:{mock.server_port}'}}
""")


CLIENT = r"""
import socket, sys, urllib.request
d, a = int(sys.argv[1]), int(sys.argv[2])
def attempt(name, fn):
    try:
        fn(); print(name, "ok")
    except OSError as e:
        print(name, e.errno)
attempt("tcp-denied", lambda: socket.create_connection(("127.0.0.2", d), timeout=5))
attempt("tcp-denied-mapped", lambda: socket.socket(socket.AF_INET6).connect(("::ffff:127.0.0.2", d)))
attempt("tcp-allowed", lambda: socket.create_connection(("127.0.0.3", a), timeout=5))
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
attempt("udp-sendto-denied", lambda: u.sendto(b"x", ("127.0.0.2", d)))
attempt("udp-sendmsg-denied", lambda: u.sendmsg([b"x"], [], 0, ("127.0.0.2", d)))
attempt("udp-sendto-allowed", lambda: u.sendto(b"x", ("127.0.0.3", a)))
attempt("external", lambda: socket.create_connection(("192.0.2.1", 80), timeout=2))
s = socket.create_connection(("127.0.0.4", 8080), timeout=5)
print("peer", s.getpeername())
print("urllib", urllib.request.urlopen("http://127.0.0.4:8080/", timeout=5).read().decode().strip())
"""


def test_connections_follow_the_rules(appvirt, tmp_path, servers):
    denied, allowed, mock = servers
    policy = _policy(tmp_path, denied, allowed, mock)
    log = tmp_path / "log.jsonl"
    r = appvirt("run", "--policy", policy, "--log", str(log), "--", "python3", "-c", CLIENT,
                str(denied.port), str(allowed.port))
    assert r.returncode == 0, r.stderr
    seen = dict(line.split(" ", 1) for line in r.stdout.splitlines())
    assert seen == {"tcp-denied": "13", "tcp-denied-mapped": "13", "tcp-allowed": "ok",
                    "udp-sendto-denied": "13", "udp-sendmsg-denied": "13",
                    "udp-sendto-allowed": "ok", "external": "111",
                    "peer": "('127.0.0.4', 8080)", "urllib": "mock service"}
    denied.drain()
    allowed.drain()
    assert (denied.connections, denied.datagrams) == (0, 0)
    assert (allowed.connections, allowed.datagrams) == (1, 1)
    records = [json.loads(x) for x in log.read_text().splitlines()]
    attempts = [x for x in records if x.get("class") == "network" and x.get("address")]
    assert {x["decision"] for x in attempts} == {"allowed", "denied", "redirected"}
    redirect = next(x for x in attempts if x["decision"] == "redirected")
    assert redirect["address"] == "127.0.0.4:8080"
    assert redirect["redirected_to"] == f"127.0.0.5:{mock.server_port}"


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_curl_reaches_the_mock_through_a_redirect(appvirt, tmp_path, servers):
    denied, allowed, mock = servers
    policy = _policy(tmp_path, denied, allowed, mock)
    r = appvirt("run", "--policy", policy, "--", "curl", "-s", "http://127.0.0.4:8080/")
    assert (r.returncode, r.stdout) == (0, "mock service\n")
    r = appvirt("run", "--policy", policy, "--", "curl", "-s", "-o", "/dev/null",
                f"http://127.0.0.2:{denied.port}/")
    assert r.returncode == 7                      # curl: failed to connect
    denied.drain()
    assert denied.connections == 0


def test_binding_follows_bind_rules(appvirt, tmp_path):
    policy = write_policy(tmp_path / "p.yaml", """
network:
  rules:
    - {to: 0.0.0.0/0, ports: 1-10000, direction: bind, action: deny}
""")
    code = ("import socket\n"
            "for port in (0, 5555):\n"
            "    s = socket.socket()\n"
            "    try:\n"
            "        s.bind(('127.0.0.1', port)); s.listen(); print(port, 'ok')\n"
            "    except OSError as e:\n"
            "        print(port, e.errno)\n")
    r = appvirt("run", "--policy", policy, "--", "python3", "-c", code)
    # Port 0 gets an ephemeral port (32768 and up): allowed; 5555 is in the denied range.
    assert r.stdout.splitlines() == ["0 ok", "5555 13"]
