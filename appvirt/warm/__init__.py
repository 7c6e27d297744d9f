"""Warm starts: `appvirt server start` keeps a process that has imported everything a run
uses, and a plain `appvirt run` without a controlling terminal hands it its command line and
standard fds, so the run skips the interpreter's imports (most of appvirt's fixed start).

client.py is what every `appvirt run` imports first, so it and wire.py import nothing beyond
builtin modules; server.py and peer.py are the server's.
"""
