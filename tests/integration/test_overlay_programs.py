"""Real programs on the overlay: the same output as natively (run on a scratch copy), and the
host tree byte-for-byte unchanged (every file hashed before and after)."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from ..conftest import write_policy

pytestmark = pytest.mark.integration


def tree_state(root: Path) -> dict[str, tuple]:
    """Every entry of a tree: type, mode, size, mtime, link target, content hash."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            st = p.lstat()
            rel = str(p.relative_to(root))
            if p.is_symlink():
                out[rel] = ("link", os.readlink(p))
            elif p.is_dir():
                out[rel] = ("dir", st.st_mode, st.st_mtime_ns)
            else:
                out[rel] = ("file", st.st_mode, st.st_size, st.st_mtime_ns,
                            hashlib.sha256(p.read_bytes()).hexdigest())
    return out


def make_scratch(root: Path) -> None:
    (root / "src" / "sub").mkdir(parents=True)
    (root / "src" / "a.txt").write_text("hello\n")
    (root / "src" / "sub" / "b.txt").write_text("world\n")
    (root / "src" / "link").symlink_to("a.txt")
    (root / "notes.txt").write_text("one\ntwo\nthree\n")


def compare(appvirt, tmp_path: Path, script: str, *, setup=make_scratch, policy=None,
            timeout: float = 120) -> tuple[str, str]:
    """Run `script` natively in a copy of the scratch tree and in the sandbox on the tree
    itself; check the tree did not change; return (native, sandboxed) output."""
    host, native = tmp_path / "host", tmp_path / "native"
    host.mkdir()
    setup(host)
    shutil.copytree(host, native, symlinks=True)
    before = tree_state(host)
    n = subprocess.run(["sh", "-c", script], cwd=native, capture_output=True, text=True,
                       timeout=timeout)
    args = ["run"] + (["--policy", policy] if policy else []) + [
        "--", "sh", "-c", f"cd '{host}' && {script}"]
    s = appvirt(*args, timeout=timeout)
    assert tree_state(host) == before, "the host tree changed"
    assert (s.returncode, s.stderr) == (n.returncode, n.stderr), s.stderr
    return n.stdout, s.stdout


def test_coreutils(appvirt, tmp_path):
    script = (
        "cp -a src copy && mv copy moved && mkdir -p deep/x/y && touch deep/x/y/t && "
        "chmod -R go-r moved && ln -s moved/a.txt sl && ln src/a.txt hard && echo more >> hard"
        " && ls -la . moved | grep -v ' \\.\\.$' | sed 's/ [A-Z][a-z][a-z] [ 0-9][0-9] [0-9:]*//'"
        " && find . | sort && du -s moved deep && stat -c '%n %s %a %h %F' src/a.txt hard "
        "moved/a.txt sl src && cat src/a.txt notes.txt && rm -rf moved deep && ls")
    native, sandboxed = compare(appvirt, tmp_path, script)
    assert sandboxed == native


def test_tar_create_and_extract(appvirt, tmp_path):
    script = ("tar -cf ../archive.tar src notes.txt && mkdir out && cd out && "
              "tar -xf ../../archive.tar && find . -type f | sort | xargs cat && "
              "tar -tvf ../../archive.tar | awk '{print $1, $3, $6}' && ls -la src/link | "
              "awk '{print $1, $NF}'")
    native, sandboxed = compare(appvirt, tmp_path, script)
    assert sandboxed == native


def _archive_over_the_tree(root: Path) -> None:
    """The scratch tree, and in it an archive of "./" and of directories the tree has, with
    modes of their own and new files in them (an archive unpacked over what is there)."""
    make_scratch(root)
    stage = root.parent / f"{root.name}-stage"
    (stage / "src" / "sub").mkdir(parents=True)
    (stage / "src" / "sub" / "new.txt").write_text("new\n")
    (stage / "fresh").mkdir()
    (stage / "fresh" / "f.txt").write_text("fresh\n")
    stage.chmod(0o750)
    (stage / "src").chmod(0o700)
    subprocess.run(["tar", "-cf", str(root / "over.tar"), "-C", str(stage), "."], check=True)
    shutil.rmtree(stage)


def test_tar_extracts_over_host_directories(appvirt, tmp_path):
    """tar checks that each directory it unpacked into is still the same one before it sets
    its mode and times ("Directory renamed before its status could be extracted")."""
    script = ("tar -xf over.tar; echo tar $?; stat -c '%a %n' . src src/sub fresh && "
              "find . | sort && cat src/sub/new.txt src/a.txt")
    native, sandboxed = compare(appvirt, tmp_path, script, setup=_archive_over_the_tree)
    assert native.startswith("tar 0\n750 .\n700 src\n")
    assert sandboxed == native


def test_shell_redirections_and_cd_into_new_directories(appvirt, tmp_path):
    script = ("mkdir -p new/dir && cd new/dir && pwd | sed 's|.*/||' && echo a > f && "
              "echo b >> f && cat < f && cd ../.. && ls new/dir && exec 3> log && echo x >&3 "
              "&& cat log && [ -d new ] && echo is-dir")
    native, sandboxed = compare(appvirt, tmp_path, script)
    assert sandboxed == native


@pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")
def test_git(appvirt, tmp_path):
    env = ("export GIT_AUTHOR_DATE='2020-01-01T00:00:00Z' GIT_COMMITTER_DATE='2020-01-01T00:00:00Z'"
           " GIT_AUTHOR_NAME=t GIT_AUTHOR_EMAIL=t@t GIT_COMMITTER_NAME=t GIT_COMMITTER_EMAIL=t@t"
           " HOME=$PWD GIT_CONFIG_NOSYSTEM=1 &&")
    script = (f"{env} git init -q -b main repo && cp -r src repo/ && cd repo && git add -A && "
              "git commit -q -m first && echo change >> src/a.txt && git commit -qam second && "
              "git log --format='%H %s' && git status --short && git ls-files")
    native, sandboxed = compare(appvirt, tmp_path, script)
    assert sandboxed == native and len(native.splitlines()) >= 5


@pytest.mark.skipif(shutil.which("sqlite3") is None, reason="sqlite3 is not installed")
def test_sqlite(appvirt, tmp_path):
    script = ("sqlite3 db.sqlite 'create table t(x); insert into t values (1),(2),(3);' && "
              "sqlite3 db.sqlite 'update t set x = x * 10; delete from t where x = 20;' && "
              "sqlite3 db.sqlite 'select group_concat(x) from t; pragma integrity_check;'")
    native, sandboxed = compare(appvirt, tmp_path, script)
    assert sandboxed == native == "10,30\nok\n"


def test_sed_in_place_on_a_host_file(appvirt, tmp_path):
    """sed -i on a file of the host's /etc: the program sees the edit, /etc does not change."""
    etc_before = tree_state(Path("/etc"))
    policy = write_policy(tmp_path / "p.yaml", "app: sed-test\n")
    r = appvirt("run", "--policy", policy, "--", "sh", "-c",
                "sed -i 's/^root:/ROOT:/' /etc/passwd && head -c 5 /etc/passwd")
    assert (r.returncode, r.stdout) == (0, "ROOT:")
    assert tree_state(Path("/etc")) == etc_before


@pytest.mark.slow
def test_make_and_cc_build_into_the_overlay(appvirt, tmp_path):
    def setup(root: Path) -> None:
        (root / "main.c").write_text('#include "util.h"\nint main(void){return util()-42;}\n')
        (root / "util.c").write_text('#include "util.h"\nint util(void){return 42;}\n')
        (root / "util.h").write_text("int util(void);\n")
        (root / "Makefile").write_text("app: main.o util.o\n\tcc -o app main.o util.o\n"
                                       "%.o: %.c util.h\n\tcc -c -o $@ $<\n")
    native, sandboxed = compare(appvirt, tmp_path, "make -s && ./app && echo built && "
                                "ls *.o app", setup=setup)
    assert sandboxed == native == "built\napp\nmain.o\nutil.o\n"


def _wheel(root: Path) -> None:
    """A local package as a wheel (pip installs it offline, with no build step)."""
    import zipfile
    files = {
        "hello_pkg/__init__.py": "GREETING = 'hello from the overlay'\n",
        "hello_pkg-1.0.dist-info/METADATA": "Metadata-Version: 2.1\nName: hello-pkg\n"
                                            "Version: 1.0\n",
        "hello_pkg-1.0.dist-info/WHEEL": "Wheel-Version: 1.0\nGenerator: test\n"
                                         "Root-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = "".join(f"{name},,\n" for name in files) + "hello_pkg-1.0.dist-info/RECORD,,\n"
    with zipfile.ZipFile(root / "hello_pkg-1.0-py3-none-any.whl", "w") as z:
        for name, text in {**files, "hello_pkg-1.0.dist-info/RECORD": record}.items():
            z.writestr(name, text)


@pytest.mark.slow
def test_python_venv_and_pip_install_without_network(appvirt, tmp_path):
    """venv's pip is a script whose #! interpreter exists only in the overlay."""
    script = ("python3 -m venv venv >/dev/null && "
              "venv/bin/pip install -q --no-index hello_pkg-1.0-py3-none-any.whl && "
              "venv/bin/python -c 'import hello_pkg; print(hello_pkg.GREETING)' && "
              "venv/bin/pip list 2>/dev/null | grep -i hello | tr -s ' '")
    native, sandboxed = compare(appvirt, tmp_path, script, setup=_wheel, timeout=300)
    assert sandboxed == native == "hello from the overlay\nhello-pkg 1.0\n"


def test_scripts_created_inside_run_with_their_interpreter(appvirt, tmp_path):
    script = ("printf '#!/bin/sh -e\\necho script $0 $@\\n' > s.sh && chmod +x s.sh && "
              "./s.sh a b && mkdir bin && ln -s /usr/bin/env bin/myenv && "
              "printf '#!%s/bin/myenv sh\\necho via $0\\n' \"$PWD\" > t.sh && chmod +x t.sh && "
              "./t.sh | sed 's|.*/||'")
    native, sandboxed = compare(appvirt, tmp_path, script)
    assert sandboxed == native == "script ./s.sh a b\nt.sh\n"


def test_etc_changes_persist_per_app_and_reset_undoes_them(appvirt, tmp_path):
    """The issue's example: a writable machine inside, /etc untouched, diff and reset."""
    etc_before = tree_state(Path("/etc"))
    count = len(subprocess.run(["ls", "/etc"], capture_output=True, text=True).stdout.split())
    r = appvirt("run", "--", "sh", "-c",
                "echo x > /etc/hostname-test; rm /etc/passwd; ls /etc | wc -l")
    assert (r.returncode, r.stdout.strip()) == (0, str(count))      # +1 file, -1 file
    assert tree_state(Path("/etc")) == etc_before
    r = appvirt("run", "--", "sh", "-c", "ls /etc/passwd; cat /etc/hostname-test")
    assert "No such file" in r.stderr and r.stdout == "x\n"
    diff = appvirt("overlay", "default", "diff", "--json")
    assert diff.returncode == 1
    import json
    changes = {c["path"]: c["kind"] for c in json.loads(diff.stdout)["changes"]}
    assert changes.get("/etc/hostname-test") == "added"
    assert changes.get("/etc/passwd") == "deleted"
    assert appvirt("overlay", "default", "reset", "--yes").returncode == 0
    r = appvirt("run", "--", "sh", "-c", "head -c 5 /etc/passwd; ls /etc/hostname-test")
    assert r.stdout == "root:" and "No such file" in r.stderr
