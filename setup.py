"""Builds fastlstm._core from fastlstm/_core.pyx and the C core in src_c/,
and the readers' compiled helpers fastlstm.loaders._sstable and _jsonscan.

Environment switches:
  FASTLSTM_DEBUG=1     Cython bounds/wraparound checks on, -O0 -g
  FASTLSTM_SANITIZE=1  build with -fsanitize=address,undefined
  FASTLSTM_NATIVE=1    add -march=native (never the default)
"""

import os
from pathlib import Path

import numpy
from Cython.Build import cythonize
from setuptools import Extension, setup

DEBUG = os.environ.get("FASTLSTM_DEBUG") == "1"
SANITIZE = os.environ.get("FASTLSTM_SANITIZE") == "1"
NATIVE = os.environ.get("FASTLSTM_NATIVE") == "1"

# -fno-trapping-math lets GCC vectorize the branch-free selects in
# src_c/fl_math.h; unlike -ffast-math it keeps IEEE NaN/inf semantics.
# -ffp-contract=fast lets the AVX2/AVX-512 clones of the hot loops use fused
# multiply-add (one rounding instead of two: never less accurate).
# -fno-wrapv undoes the -fwrapv that CPython's own build flags add to every
# extension: with wrapping signed ints GCC keeps recomputing the kernels'
# index arithmetic (batch-1 sequence, H=128: 3.2 -> 3.0 us per step in the
# C benchmark). Neither the C core nor Cython's code relies on wrapping.
compile_args = [
    "-std=c11",
    "-fno-wrapv",
    "-fno-trapping-math",
    "-ffp-contract=fast",
    "-Wall",
    "-Wno-unused-function",
    "-fvisibility=hidden",
    "-pthread",
]
compile_args += ["-O0", "-g"] if DEBUG else ["-O3"]
link_args = ["-pthread"]
if SANITIZE:
    compile_args += ["-fsanitize=address,undefined", "-fno-omit-frame-pointer"]
    link_args += ["-fsanitize=address,undefined"]
if NATIVE:
    compile_args.append("-march=native")

c_sources = sorted(str(p) for p in Path("src_c").glob("fl_*.c"))
# a changed header rebuilds every source (setuptools does not scan includes)
c_headers = sorted(str(p) for p in Path("src_c").glob("*.h"))

extension = Extension(
    "fastlstm._core",
    sources=["fastlstm/_core.pyx", *c_sources],
    depends=c_headers,
    include_dirs=["src_c", numpy.get_include()],
    define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
    libraries=["m"],
    extra_compile_args=compile_args,
    extra_link_args=link_args,
)

# The readers' helpers parse hostile bytes: they keep Cython's bounds checks
# (their own directives), and know nothing of the runtime.
helpers = [
    Extension(
        f"fastlstm.loaders.{name}",
        sources=[f"fastlstm/loaders/{name}.pyx"],
        extra_compile_args=[c for c in compile_args if not c.startswith("-std")],
        extra_link_args=link_args,
    )
    for name in ("_sstable", "_jsonscan")
]

directives = {
    "language_level": 3,
    "boundscheck": DEBUG,
    "wraparound": DEBUG,
    "initializedcheck": DEBUG,
    "cdivision": True,
    "embedsignature": True,
}

setup(ext_modules=cythonize([extension, *helpers], compiler_directives=directives))
