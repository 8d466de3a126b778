"""Build hook for the optional C extension; everything else is in pyproject.toml.

``parjobs.ops._fastcopy`` copies groups of small files with the GIL released (see its
source). It is optional: where no C compiler is available the install goes on without it
and parjobs copies those files in Python, slower but with the same results.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "parjobs.ops._fastcopy",
            ["parjobs/ops/_fastcopy.c"],
            optional=True,
            extra_compile_args=["-O2", "-Wall", "-Wextra", "-Wno-missing-field-initializers"],
        )
    ]
)
