"""Types of the optional C extension built from _fastcopy.c."""

MODE: int
TIMES: int
REFLINK: int
LSTAT: int
NOT_REGULAR: int
CHANGED: int
TOO_BIG: int

def copy_many(
    items: list[tuple[bytes, int, bytes]], flags: int, max_size: int, /
) -> tuple[list[int], list[int], bool]: ...
