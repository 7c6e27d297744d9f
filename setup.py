"""Build of the compiled fast path (everything else is in pyproject.toml).

Optional: without a C compiler or Python's headers the install still succeeds and the tracer
answers every stop in Python (slower, same behaviour).
"""

from setuptools import Extension, setup

setup(ext_modules=[Extension("appvirt.tracer._fastpath", ["appvirt/tracer/_fastpath.c"],
                             extra_compile_args=["-O2", "-Wall", "-Wextra",
                                                 "-Wno-unused-parameter"],
                             optional=True)])
