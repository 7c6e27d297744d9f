"""Build of the compiled parts (everything else is in pyproject.toml).

Both are optional: without a C compiler or Python's headers the install still succeeds.
- The fast path (appvirt/tracer/_fastpath*.c): without it the tracer answers every stop in
  Python (slower, same behaviour).
- The `appvirt` executable's warm-start client (bin/appvirt.c), installed as `appvirt`, with
  the Python executable (bin/appvirt) beside it as `appvirt-py`, which the client becomes for
  everything it does not hand to a warm server. Without it the Python executable is
  `appvirt` itself (a warm start then pays for a new interpreter: 10-15 ms).
"""

import os

from setuptools import Extension, setup
from distutils.command.build_scripts import build_scripts    # setuptools' own copy

SOURCES = [f"appvirt/tracer/_fastpath{part}.c"
           for part in ("", "_answer", "_paths", "_reads", "_listing", "_owned", "_log",
                        "_clock", "_inflight", "_fds", "_notify", "_ring")]
CLIENT_SOURCE = "bin/appvirt.c"
PYTHON_NAME = "appvirt-py"          # bin/appvirt.c: COLD_SCRIPT


class build_scripts_and_client(build_scripts):
    def finalize_options(self) -> None:
        super().finalize_options()
        self.force = True               # the script is copied again, then renamed below

    def run(self) -> None:
        super().run()
        from distutils.ccompiler import new_compiler
        from distutils.errors import CCompilerError, DistutilsError
        from distutils.sysconfig import customize_compiler
        temp = self.get_finalized_command("build").build_temp
        try:
            compiler = new_compiler()
            customize_compiler(compiler)
            objects = compiler.compile([CLIENT_SOURCE], output_dir=temp,
                                       extra_postargs=["-O2", "-Wall", "-Wextra"])
            compiler.link_executable(objects, "appvirt-client", output_dir=temp)
        except (CCompilerError, DistutilsError, OSError) as e:
            self.warn(f"the C client of warm starts is not built ({e}): `appvirt` is the "
                      "Python executable alone")
            return
        script = os.path.join(self.build_dir, "appvirt")
        os.replace(script, os.path.join(self.build_dir, PYTHON_NAME))
        self.copy_file(os.path.join(temp, "appvirt-client"), script)
        os.chmod(script, 0o755)


setup(cmdclass={"build_scripts": build_scripts_and_client},
      ext_modules=[Extension("appvirt.tracer._fastpath", SOURCES,
                             depends=["appvirt/tracer/_fastpath.h"],
                             extra_compile_args=["-O2", "-Wall", "-Wextra",
                                                 "-Wno-unused-parameter"],
                             optional=True)])
