"""Build of the compiled fast path (everything else is in pyproject.toml).

Optional: without a C compiler or Python's headers the install still succeeds and the tracer
answers every stop in Python (slower, same behaviour).
"""

from setuptools import Extension, setup

SOURCES = [f"appvirt/tracer/_fastpath{part}.c"
           for part in ("", "_answer", "_paths", "_reads", "_listing", "_owned", "_log",
                        "_clock")]

setup(ext_modules=[Extension("appvirt.tracer._fastpath", SOURCES,
                             depends=["appvirt/tracer/_fastpath.h"],
                             extra_compile_args=["-O2", "-Wall", "-Wextra",
                                                 "-Wno-unused-parameter"],
                             optional=True)])
