"""Build hook for the optional C extensions; everything else is in pyproject.toml.

``parjobs.ops._fastcopy`` copies groups of small files with the GIL released, and
``parjobs.ops._fastscan`` lists directories and computes content ids so (see their sources;
both include ``_pyc_common.h``, ``_fastscan`` the vendored ``vendor/xxhash.h``). Both are
optional: where no C compiler is available the install goes on without them and parjobs does
that work in Python, slower but with the same results.
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
            depends=["parjobs/ops/_pyc_common.h", "parjobs/ops/vendor/xxhash.h"],
            optional=True,
            extra_compile_args=FLAGS,
        ),
    ]
)
