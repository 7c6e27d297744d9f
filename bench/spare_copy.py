"""What a warm server's spare (appvirt/warm/spare.py) spends copying its pages: the pages
present (what it does) against every private writable mapping.

This process does what the server does before it serves (`preload()`), then forks children
that copy, alternating the two ways, and prints the medians of the copying's time and the
bytes asked for. Run it by hand, never in CI:

    python bench/spare_copy.py [REPS]
"""

from __future__ import annotations

import ctypes
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from appvirt.warm import server, spare  # noqa: E402


def every_mapping() -> int:
    """MADV_POPULATE_WRITE of each private writable mapping whole; the bytes asked for."""
    asked = 0
    for start, end in spare.private_writable_mappings():
        if spare._libc.madvise(ctypes.c_void_p(start), ctypes.c_size_t(end - start),
                               spare.MADV_POPULATE_WRITE) == 0:
            asked += end - start
    return asked


def in_fork(copy) -> tuple[float, int]:
    """copy() in a fork of this process (its pages shared with this one): seconds, bytes."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the fork
        start = time.perf_counter()
        asked = copy()
        os.write(w, f"{time.perf_counter() - start} {asked}".encode())
        os._exit(0)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        seconds, asked = f.read().split()
    os.waitpid(pid, 0)
    return float(seconds), int(asked)


def main() -> None:
    reps = int(sys.argv[1]) if len(sys.argv) > 1 else 15
    with tempfile.TemporaryDirectory(prefix="appvirt-spare-copy-") as home:
        os.environ["APPVIRT_HOME"] = home      # (the policy cache preload() writes)
        server.preload()
    ways = {"the pages present (appvirt)": spare.populate_writable,
            "every private writable mapping": every_mapping}
    results: dict[str, list[tuple[float, int]]] = {name: [] for name in ways}
    for i in range(reps):
        for name in (list(ways) if i % 2 else reversed(list(ways))):
            results[name].append(in_fork(ways[name]))
            time.sleep(0.05)
    for name, runs in results.items():
        print(f"{name}: {statistics.median(s for s, _ in runs) * 1000:.1f} ms, "
              f"{statistics.median(b for _, b in runs) / 2**20:.1f} MB ({reps} forks)")


if __name__ == "__main__":
    main()
