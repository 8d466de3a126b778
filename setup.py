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

``pip install -e .`` builds in a fresh temporary directory every time, so a reinstall (CI
runs two) would compile again although nothing changed: ``_fastscan``'s dispatcher alone
takes 10-12 s. `BuildExt` reuses the extension already built next to the sources when it
is newer than every file it is built from (sources, headers, this file), as ``make`` would;
``build_ext --force`` always compiles.
"""

import os
import shutil

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

HERE = os.path.dirname(os.path.abspath(__file__))


class BuildExt(build_ext):
    """`build_ext` that copies an up-to-date in-tree build instead of compiling it again."""

    def build_extension(self, ext: Extension) -> None:
        target = self.get_ext_fullpath(ext.name)
        built = os.path.join(HERE, self.get_ext_filename(ext.name))
        inputs = [os.path.join(HERE, p) for p in (*ext.sources, *ext.depends, "setup.py")]
        if not self.force and os.path.abspath(target) != built and _newer_than(built, inputs):
            print(f"reusing {built} (newer than its sources)")
            os.makedirs(os.path.dirname(target), exist_ok=True)
            shutil.copyfile(built, target)
            return
        super().build_extension(ext)


def _newer_than(path: str, inputs: list[str]) -> bool:
    try:
        made = os.stat(path).st_mtime
        return all(os.stat(p).st_mtime < made for p in inputs)
    except OSError:  # not built yet, or an input is missing: build
        return False


FLAGS = ["-O2", "-Wall", "-Wextra", "-Wno-missing-field-initializers"]

setup(
    cmdclass={"build_ext": BuildExt},
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
    ],
)
