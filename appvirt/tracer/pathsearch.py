"""Finding a program on a search path, as shutil.which does on Linux.

shutil itself imports the compression modules (bz2, lzma) for its archives: start-up time for
every run, which only needs this search.
"""

from __future__ import annotations

import os


def which(name: str, path: str) -> str | None:
    """The first executable file called `name` (a bare name, no '/') in the directories of
    `path` (os.pathsep-separated, each searched once), or None."""
    seen = set()
    for directory in path.split(os.pathsep) if path else ():
        if directory in seen:
            continue
        seen.add(directory)
        candidate = os.path.join(directory, name)
        if os.path.exists(candidate) and os.access(candidate, os.F_OK | os.X_OK) \
                and not os.path.isdir(candidate):
            return candidate
    return None
