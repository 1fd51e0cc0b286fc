"""Build: compile the Cython fast path when possible; otherwise install the pure-Python twin.

An install never fails for want of Cython or a C compiler (QG_NO_EXTENSIONS=1 skips the attempt).
"""

import os
import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

PYX = "src/quota_gateway/_fastpath.pyx"


class OptionalBuildExt(build_ext):
    """Like build_ext, but a failed compile is a warning: the pure-Python twin takes over."""

    def run(self):
        try:
            super().run()
        except Exception as exc:  # no compiler, missing headers, ...
            self._warn(exc)

    def build_extension(self, ext):
        try:
            super().build_extension(ext)
        except Exception as exc:
            self._warn(exc)

    @staticmethod
    def _warn(exc):
        print(f"WARNING: C extension not built ({exc}); using the pure-Python fast path", file=sys.stderr)


def extensions():
    if os.environ.get("QG_NO_EXTENSIONS"):
        return []
    try:
        from Cython.Build import cythonize
    except ImportError:
        print("WARNING: Cython not available; using the pure-Python fast path", file=sys.stderr)
        return []
    return cythonize([Extension("quota_gateway._fastpath", [PYX], extra_compile_args=["-O3"])],
                     compiler_directives={"language_level": "3"}, quiet=True)


setup(ext_modules=extensions(), cmdclass={"build_ext": OptionalBuildExt})
