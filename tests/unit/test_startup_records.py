"""The named tuples `appvirt run` imports have evaluated field annotations.

typing.NamedTuple turns a string annotation (what `from __future__ import annotations` makes
of every one) into a ForwardRef, which compiles it: some 20 us a field, at every start. So
the modules on the run path that define named tuples do without that import."""

import subprocess
import sys

_CODE = """
import sys, typing
import appvirt.entry as e
e.import_quietly("appvirt.run")
import appvirt.handlers.paths, appvirt.handlers.reads, appvirt.net.addresses  # at first use
for name, module in list(sys.modules.items()):
    if name != "appvirt" and not name.startswith("appvirt."):
        continue
    for cls in vars(module).values():
        if (isinstance(cls, type) and issubclass(cls, tuple) and hasattr(cls, "_fields")
                and cls.__module__ == name):
            for field, ann in cls.__dict__.get("__annotations__", {}).items():
                if isinstance(ann, (str, typing.ForwardRef)):
                    print(f"{name}.{cls.__qualname__}.{field}")
print("checked")
"""


def test_run_path_named_tuples_have_no_string_annotations():
    out = subprocess.run([sys.executable, "-c", _CODE], check=True, capture_output=True,
                         text=True).stdout.split()
    assert out[-1] == "checked"
    assert not out[:-1], "string (ForwardRef) field annotations: " + " ".join(out[:-1])
