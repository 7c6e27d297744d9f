"""Warm starts: `appvirt server start` keeps a process that has imported everything a run
uses, and a plain `appvirt run` hands it its command line and standard fds, so the run skips
the interpreter's imports (most of appvirt's fixed start). The C client (bin/appvirt.c) then
forks the program itself, which so keeps its session and terminal (tracer/clientspawn.py);
the Python client hands over only runs without a controlling terminal.

client.py is what every `appvirt run` imports first, so it and wire.py import nothing beyond
builtin modules; server.py and peer.py are the server's.
"""
