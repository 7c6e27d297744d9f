"""Shared fixtures. Integration tests need real ptrace and seccomp; they are skipped, with the
reason, only where the kernel refuses them (checked once per session)."""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DEMO_SRC = REPO / "demo_apps"
# The interpreter itself, for tests that count a program's stops: a version manager's
# `python3` on PATH may be a shim (pyenv's runs bash and programs whose stops vary by run).
PYTHON = os.path.realpath(sys.executable)


def _ptrace_problem() -> str | None:
    if platform.system() != "Linux" or platform.machine() != "x86_64":
        return "appvirt traces x86_64 Linux programs only"
    from appvirt.errors import EnvironmentUnsupported
    from appvirt.tracer import seccomp
    try:
        seccomp.check_available()
    except EnvironmentUnsupported as e:
        return str(e)
    return None


@pytest.fixture(scope="session", autouse=True)
def _session_home(tmp_path_factory: pytest.TempPathFactory):
    """APPVIRT_HOME for the whole session, under pytest's temporary directory: what appvirt
    caches there from inside the test process (checked policies, python-ptrace's facts) never
    goes to the user's own. Tests that look at a home use the `home` fixture.

    APPVIRT_SERVER=manual: a run asks a server the test started, but a cold one leaves none
    behind (warm/autostart.py; test_warm_start.py tests that with it unset)."""
    chosen = {"APPVIRT_HOME": str(tmp_path_factory.mktemp("session-home")),
              "APPVIRT_SERVER": "manual"}
    before = {name: os.environ.get(name) for name in chosen}
    os.environ.update(chosen)
    yield
    for name, value in before.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


@pytest.fixture(autouse=True)
def _no_policy_built_before():
    """Each test loads its policies afresh: the loader keeps the ones built in its process
    (for a warm server's runs), which would hide one test's cache files from the next."""
    from appvirt.policy import loader
    loader._loaded.clear()


@pytest.fixture(scope="session")
def ptrace_ok() -> None:
    problem = _ptrace_problem()
    if problem:
        pytest.skip(problem)


@pytest.fixture(scope="session")
def trampolines() -> None:
    """Skips where the kernel refuses an executable mapping of a memfd (a security module):
    runs there have no trampolines (trampoline.py) and keep their exit stops."""
    from appvirt.tracer import slots
    fd = os.memfd_create("appvirt-probe", os.MFD_CLOEXEC)
    try:
        os.ftruncate(fd, 4096)
        if not slots._executable(fd):
            pytest.skip("no executable mapping of a memfd here: no trampolines")
    finally:
        os.close(fd)


@pytest.fixture(scope="session")
def demo(tmp_path_factory: pytest.TempPathFactory):
    """Build demo_apps/*.c with the system compiler; returns name -> path of the binary."""
    out = tmp_path_factory.mktemp("demo_build")
    built: dict[str, str] = {}

    def get(name: str) -> str:
        if name not in built:
            src = DEMO_SRC / f"{name}.c"
            exe = out / name
            subprocess.run(["cc", "-O2", "-Wall", "-pthread", "-o", str(exe), str(src)],
                           check=True, capture_output=True, timeout=120)
            built[name] = str(exe)
        return built[name]
    return get


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private APPVIRT_HOME for the test."""
    h = tmp_path / "appvirt-home"
    monkeypatch.setenv("APPVIRT_HOME", str(h))
    return h


def install_c_client(bin_dir: Path, appvirt_py: str) -> Path:
    """bin/appvirt.c built as bin_dir/appvirt, with `appvirt_py` (the text of the Python
    executable it becomes) beside it as pip installs them; the C client's path."""
    if shutil.which("cc") is None:
        pytest.skip("no C compiler")
    bin_dir.mkdir(parents=True, exist_ok=True)
    subprocess.run(["cc", "-O2", "-Wall", "-Wextra", "-Werror", "-o", str(bin_dir / "appvirt"),
                    str(REPO / "bin" / "appvirt.c")], check=True, timeout=120)
    (bin_dir / "appvirt-py").write_text(appvirt_py)
    (bin_dir / "appvirt-py").chmod(0o755)
    return bin_dir / "appvirt"


def appvirt_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "appvirt", *args]


@pytest.fixture
def appvirt(home: Path, ptrace_ok: None):
    """Run `appvirt ARGS...` to completion; returns the CompletedProcess (text)."""
    def run(*args: str, timeout: float = 60, input: str | None = None,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(appvirt_cmd(*args), capture_output=True, text=True,
                              timeout=timeout, input=input,
                              env={**os.environ, **(env or {})})
    return run


def write_policy(path: Path, text: str) -> str:
    path.write_text(text)
    return str(path)


@pytest.fixture(autouse=True, scope="session")
def _schema_validator_loaded():
    """appvirt loads jsonschema on first need; load it before any test fakes the filesystem
    (pyfakefs), where it could not read its own package data."""
    from appvirt.policy.loader import _validator
    _validator()


@pytest.fixture(autouse=True, scope="session")
def _handlers_loaded():
    """appvirt imports a handler module at its calls' first dispatch; import them all before
    any test fakes the filesystem (pyfakefs unloads the modules first imported under it,
    leaving the table with handlers of modules no longer in sys.modules)."""
    from appvirt.handlers import TABLE
    for e in TABLE.entries:
        e.handler


@pytest.fixture(autouse=True)
def _no_strays():
    """Kill whatever a test left running, so one failure cannot hang or skew the next."""
    yield
    import psutil
    for child in psutil.Process().children(recursive=True):
        try:
            child.kill()
        except psutil.NoSuchProcess:
            pass
