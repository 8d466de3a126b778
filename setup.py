"""Build hook for the optional C extensions; everything else is in pyproject.toml.

``parjobs.ops._fastcopy`` copies groups of small files with the GIL released, and
``parjobs.ops._fastscan`` lists directories and computes content ids so (see their sources;
both include ``_pyc_common.h``). Both are optional: where no C compiler is available the
install goes on without them and parjobs does that work in Python, slower but with the same
results.

``vendor/`` holds xxHash 0.8.1 (BSD-2-Clause, the licence at the top of each file), which
``_fastscan`` compiles in: ``xxhash.h``, so that a plain ``pip install`` needs no system
package, and on x86 with GCC or Clang ``xxh_x86dispatch.c``, xxHash's own dispatcher: it
builds XXH3's kernels for SSE2, AVX2 and AVX-512 under ``__attribute__((target))`` and picks
at import the widest the CPU has. So the flags below stay the baseline's (the extension runs
on any x86-64; never ``-mavx2``) and the content ids still hash at AVX2 speed where there is
AVX2 (1.6-1.7x SSE2's bytes per second). Elsewhere the header alone is used.
"""

from setuptools import Extension, setup

FLAGS = ["-O2", "-Wall", "-Wextra", "-Wno-missing-field-initializers"]

setup(
    ext_modules=[
        Extension(
            "parjobs.ops._fastcopy",
            ["parjobs/ops/_fastcopy.c"],
            depends=["parjobs/ops/_pyc_common.h"],
            optional=True,
            extra_compile_args=FLAGS,
        ),
        Extension(
            "parjobs.ops._fastscan",
            ["parjobs/ops/_fastscan.c"],
            depends=[
                "parjobs/ops/_pyc_common.h",
                "parjobs/ops/vendor/xxhash.h",
                "parjobs/ops/vendor/xxh_x86dispatch.c",  # #included, not compiled apart
            ],
            optional=True,
            extra_compile_args=FLAGS,
        ),
    ]
)
