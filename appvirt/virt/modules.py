"""Virtual kernel modules: what `init_module`/`finit_module` would load, remembered in the store.

A module image is checked the way the kernel's loader starts (an x86-64 relocatable ELF with
a `.gnu.linkonce.this_module` section, else ENOEXEC); its name comes from `.modinfo`
(`name=`, which modpost has written since Linux 4.x) or from `struct module` itself. Loading
records it under machine/modules/NAME (its parameters and size); it is then listed in the
program's /proc/modules and /sys/module/NAME, and `delete_module` removes it.
"""

from __future__ import annotations

import errno
import io
import os
from dataclasses import dataclass
from typing import BinaryIO

from ..errors import GuestErrno
from ..fs.machinetree import MachineTree
from ..store import Store, Value
from ..store.wellknown import MODULE_PARAMS, MODULE_SIZE, MODULES_KEY, module_key

MODULE_NAME_LEN = 56            # the kernel's MODULE_NAME_LEN (64 - sizeof(unsigned long))
THIS_MODULE_NAME_AT = 24        # offsetof(struct module, name) on x86-64
SYS_MODULE = b"/sys/module"
MAX_IMAGE = 256 << 20           # decompressed size appvirt reads at most
INIT_IGNORE_MODVERSIONS, INIT_IGNORE_VERMAGIC, INIT_COMPRESSED_FILE = 1, 2, 4
INIT_FLAGS = INIT_IGNORE_MODVERSIONS | INIT_IGNORE_VERMAGIC | INIT_COMPRESSED_FILE
_GZIP, _XZ, _ZSTD = b"\x1f\x8b", b"\xfd7zXZ\x00", b"\x28\xb5\x2f\xfd"


@dataclass(frozen=True, slots=True)
class ModuleImage:
    name: str
    size: int                   # bytes of the (decompressed) image
    info: dict[str, str]        # its .modinfo tags (license, description, depends, ...)


@dataclass(frozen=True, slots=True)
class LoadedModule:
    name: str
    size: int
    params: tuple[str, ...]


def _decompressed(raw: bytes) -> bytes:
    import gzip     # imported here, like pyelftools below: only module loading needs them
    import lzma
    try:
        if raw.startswith(_GZIP):
            with gzip.GzipFile(fileobj=io.BytesIO(raw)) as g:
                return g.read(MAX_IMAGE + 1)
        if raw.startswith(_XZ):
            return lzma.LZMADecompressor().decompress(raw, MAX_IMAGE + 1)
    except (OSError, EOFError, lzma.LZMAError) as e:
        raise GuestErrno(errno.EINVAL, f"bad compressed module: {e}") from None
    if raw.startswith(_ZSTD):
        raise GuestErrno(errno.EOPNOTSUPP, "zstd-compressed modules are not read by appvirt")
    raise GuestErrno(errno.EINVAL, "MODULE_INIT_COMPRESSED_FILE on an uncompressed file")


def read_module(f: BinaryIO, compressed: bool = False) -> ModuleImage:
    """Check a module image and find its name; GuestErrno as the kernel would fail."""
    raw = f.read(MAX_IMAGE + 1)
    if compressed:
        raw = _decompressed(raw)
    if len(raw) > MAX_IMAGE:
        raise GuestErrno(errno.EFBIG, "module image larger than appvirt reads")
    # Imported here: pyelftools adds ~20 ms to every start-up, and only module loading uses it.
    from elftools.common.exceptions import ELFError
    from elftools.elf.elffile import ELFFile
    try:
        elf = ELFFile(io.BytesIO(raw))
        if elf["e_type"] != "ET_REL" or elf["e_machine"] != "EM_X86_64" or elf.elfclass != 64:
            raise GuestErrno(errno.ENOEXEC, "not an x86-64 relocatable ELF object")
        this = elf.get_section_by_name(".gnu.linkonce.this_module")
        if this is None:
            raise GuestErrno(errno.ENOEXEC, "no module found in object")
        modinfo = elf.get_section_by_name(".modinfo")
        info = _tags(modinfo.data()) if modinfo is not None else {}
        name = info.get("name") or _cstr(this.data()[THIS_MODULE_NAME_AT:
                                                     THIS_MODULE_NAME_AT + MODULE_NAME_LEN])
    except (ELFError, ValueError, KeyError, IndexError, AttributeError, AssertionError) as e:
        raise GuestErrno(errno.ENOEXEC, f"bad ELF object: {e}") from None
    if not name or not all(c.isalnum() or c in "_-" for c in name) or \
            len(name) >= MODULE_NAME_LEN:
        raise GuestErrno(errno.ENOEXEC, "the module has no valid name")
    return ModuleImage(name, len(raw), info)


def _tags(data: bytes) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in data.split(b"\0"):
        key, eq, value = item.partition(b"=")
        if eq and key:
            out.setdefault(key.decode("ascii", "replace"), value.decode("utf-8", "replace"))
    return out


def _cstr(data: bytes) -> str:
    return data.split(b"\0", 1)[0].decode("ascii", "replace")


def split_params(text: str) -> tuple[str, ...]:
    """Split a module parameter string as the kernel's next_arg() does: on spaces, except
    inside double quotes (which are removed)."""
    out, cur, quoted, has = [], [], False, False
    for c in text:
        if c == '"':
            quoted, has = not quoted, True
        elif c.isspace() and not quoted:
            if has:
                out.append("".join(cur))
            cur, has = [], False
        else:
            cur.append(c)
            has = True
    if has:
        out.append("".join(cur))
    return tuple(out)


def host_module_names(proc_modules: bytes) -> set[str]:
    return {line.split(b" ", 1)[0].decode("ascii", "replace")
            for line in proc_modules.splitlines() if line.strip()}


class VirtualModules:
    """The app's loaded virtual modules, kept in its store (or in memory without one)."""

    def __init__(self, store: Store | None, tree: MachineTree | None = None) -> None:
        self.store = store
        self.tree = tree
        self._memory: dict[str, LoadedModule] = {}
        if tree is not None:
            self.sync_tree(tree)

    def loaded(self) -> dict[str, LoadedModule]:
        if self.store is None:
            return dict(self._memory)
        view = self.store.view()
        prefix = MODULES_KEY + "/"
        names = [k[len(prefix):] for k in view.keys
                 if k.startswith(prefix) and "/" not in k[len(prefix):]]
        out = {}
        for name in names:
            params = view.values.get((prefix + name, MODULE_PARAMS))
            size = view.values.get((prefix + name, MODULE_SIZE))
            out[name] = LoadedModule(
                name, size.data if size is not None and isinstance(size.data, int) else 0,
                tuple(params.data) if params is not None and isinstance(params.data, (list, tuple))
                else ())
        return out

    def load(self, image: ModuleImage, params: str, host_names: set[str]) -> LoadedModule:
        if image.name in host_names or image.name in self.loaded():
            raise GuestErrno(errno.EEXIST, f"module {image.name} is already loaded")
        mod = LoadedModule(image.name, image.size, split_params(params))
        if self.store is None:
            self._memory[mod.name] = mod
        else:
            with self.store.batch():
                self.store.set(module_key(mod.name), MODULE_PARAMS, Value.multi(list(mod.params)))
                self.store.set(module_key(mod.name), MODULE_SIZE, Value.integer(mod.size))
        if self.tree is not None:
            self.sync_tree(self.tree)
        return mod

    def unload(self, name: str, host_names: set[str]) -> None:
        if name not in self.loaded():
            if name in host_names:
                raise GuestErrno(errno.EPERM, f"{name} is a host module: it stays loaded")
            raise GuestErrno(errno.ENOENT, f"module {name} is not loaded")
        if self.store is None:
            del self._memory[name]
        else:
            self.store.delete_key(module_key(name), recursive=True)
        if self.tree is not None:
            self.sync_tree(self.tree)

    def proc_modules(self, host: bytes) -> bytes:
        """/proc/modules: the host's lines, then one per virtual module (as the kernel prints
        them for an unprivileged reader: no address; out-of-tree and unsigned, "(OE)")."""
        lines = [host if not host or host.endswith(b"\n") else host + b"\n"]
        for m in sorted(self.loaded().values(), key=lambda m: m.name):
            lines.append(f"{m.name} {_pages(m.size)} 0 - Live 0x0000000000000000 (OE)\n"
                         .encode())
        return b"".join(lines)

    def sync_tree(self, tree: MachineTree) -> None:
        """Make the view's /sys/module hold one directory per virtual module."""
        loaded = self.loaded()
        for name in tree.added(SYS_MODULE):
            if os.fsdecode(name) not in loaded:
                tree.remove(SYS_MODULE + b"/" + name)
        for mod in loaded.values():
            tree.replace(SYS_MODULE + b"/" + os.fsencode(mod.name), sys_module_entries(mod))


def sys_module_entries(mod: LoadedModule) -> dict[bytes, bytes | None]:
    """What /sys/module/NAME holds for a loaded module (what lsmod and rmmod read)."""
    entries: dict[bytes, bytes | None] = {
        b"initstate": b"live\n", b"refcnt": b"0\n", b"taint": b"OE\n",
        b"coresize": b"%d\n" % _pages(mod.size), b"initsize": b"0\n",
        b"holders": None, b"parameters": None}
    for p in mod.params:
        key, _, value = p.partition("=")
        if key and "/" not in key and key not in (".", ".."):
            entries[b"parameters/" + os.fsencode(key)] = os.fsencode(value or "Y") + b"\n"
    return entries


def _pages(size: int) -> int:
    return (size + 4095) // 4096 * 4096
