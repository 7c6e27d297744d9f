"""What an installed copy (`pip install .`, not editable) needs besides the code."""

from __future__ import annotations

import ast
import fnmatch
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / "appvirt"
CODE = ("*.py", "*.pyc", "*.c", "*.h", "*.so")


def _package_data() -> list[str]:
    with open(REPO / "pyproject.toml", "rb") as f:
        return tomllib.load(f)["tool"]["setuptools"]["package-data"]["appvirt"]


def test_every_data_file_of_the_package_is_installed():
    """A file the package reads at run time (the default policy, the policy schema) is
    installed only when package-data names it: a run without --policy failed on an
    installed copy while the default policy was left out."""
    globs = _package_data()
    data = [p.relative_to(PACKAGE).as_posix() for p in PACKAGE.rglob("*")
            if p.is_file() and "__pycache__" not in p.parts
            and not any(fnmatch.fnmatch(p.name, c) for c in CODE)]
    assert "policy/default.yaml" in data and "policy/schema.json" in data
    missing = [d for d in data if not any(fnmatch.fnmatch(d, g) for g in globs)]
    assert missing == []


def test_every_package_data_pattern_names_a_file():
    for g in _package_data():
        assert list(PACKAGE.glob(g)), g


def test_the_packaged_default_policy_is_the_shipped_one():
    """`appvirt run` without --policy uses the package's copy; the README's commands use
    policies/default.yaml: one policy."""
    assert (PACKAGE / "policy" / "default.yaml").read_bytes() == \
        (REPO / "policies" / "default.yaml").read_bytes()


def test_the_executable_imports_nothing_before_the_entry_module():
    """`pip install` puts bin/appvirt on PATH (script-files), not an entry point's generated
    wrapper, which imports `re` at every start: 5-6 ms of a warm run's 35."""
    with open(REPO / "pyproject.toml", "rb") as f:
        project = tomllib.load(f)
    assert project["tool"]["setuptools"]["script-files"] == ["bin/appvirt"]
    assert "scripts" not in project["project"]
    script = (REPO / "bin" / "appvirt").read_text()
    assert script.startswith("#!python\n")      # pip makes it the install's interpreter
    imported = set()
    for node in ast.walk(ast.parse(script)):
        if isinstance(node, ast.Import):
            imported |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            imported.add(node.module)
    assert imported == {"sys", "appvirt.entry"}


def test_the_executable_runs_the_command_line():
    done = subprocess.run([sys.executable, str(REPO / "bin" / "appvirt"), "--version"],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0 and done.stdout.startswith("appvirt, version"), done


@pytest.mark.parametrize("compiler", ["cc", "false"])
def test_the_installed_executables_are_the_c_client_and_the_python_one_beside_it(
        tmp_path, compiler):
    """setup.py's build_scripts (what `pip install` runs): with a compiler, `appvirt` is
    bin/appvirt.c and `appvirt-py` the script; without one, `appvirt` is the script (and a
    build again gives the same)."""
    if shutil.which(compiler) is None:
        pytest.skip(f"no {compiler}")
    for name in ("setup.py", "pyproject.toml", "README.md", "bin"):
        (shutil.copytree if (REPO / name).is_dir() else shutil.copy)(REPO / name, tmp_path / name)
    for _ in range(2):
        done = subprocess.run([sys.executable, "setup.py", "-q", "build_scripts", "-d", "out"],
                              cwd=tmp_path, capture_output=True, text=True, timeout=300,
                              env={**os.environ, "CC": compiler})
        assert done.returncode == 0, done.stderr
        built = {p.name: p.read_bytes() for p in (tmp_path / "out").iterdir()}
        script = (REPO / "bin" / "appvirt").read_bytes().split(b"\n", 1)[1]
        if compiler == "false":
            assert set(built) == {"appvirt"} and built["appvirt"].endswith(script)
            assert "the C client of warm starts is not built" in done.stderr
        else:
            assert set(built) == {"appvirt", "appvirt-py"}
            assert built["appvirt"].startswith(b"\x7fELF")
            assert built["appvirt-py"].startswith(b"#!") and built["appvirt-py"].endswith(script)


def test_the_sdist_has_every_source_setup_py_builds(tmp_path):
    """A wheel built from the sdist (`python -m build`, a package index) compiles the same."""
    import tarfile
    src = tmp_path / "src"             # a checkout's files alone: no earlier build's egg-info
    shutil.copytree(REPO, src, ignore=shutil.ignore_patterns(
        ".*", "*.egg-info", "build", "dist", "__pycache__", "*.so", "tests", "bench", "docs"))
    done = subprocess.run([sys.executable, "setup.py", "-q", "sdist", "-d", str(tmp_path)],
                          cwd=src, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    [sdist] = tmp_path.glob("*.tar.gz")
    with tarfile.open(sdist) as tar:
        names = {n.split("/", 1)[1] for n in tar.getnames() if "/" in n}
    assert {"bin/appvirt", "bin/appvirt.c", "appvirt/tracer/_fastpath.h",
            *(str(p.relative_to(REPO)) for p in (PACKAGE / "tracer").glob("_fastpath*.c"))
            } <= names
