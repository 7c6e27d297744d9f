"""Where appvirt's state lives, as a string: for the warm-start client, which must not pay for
pathlib (state.appvirt_home is the same rule as a Path)."""

import os


def home_dir(environ=None) -> str:
    """`$APPVIRT_HOME`, else `$XDG_DATA_HOME/appvirt` (default `~/.local/share/appvirt`)."""
    env = os.environ if environ is None else environ
    if env.get("APPVIRT_HOME"):
        return env["APPVIRT_HOME"]
    data = env.get("XDG_DATA_HOME") or os.path.join(env.get("HOME", "/root"), ".local", "share")
    return os.path.join(data, "appvirt")
