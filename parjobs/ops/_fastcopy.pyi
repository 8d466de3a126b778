"""Types of the optional C extension built from _fastcopy.c."""

API: int
MODE: int
TIMES: int
REFLINK: int
RANGE: int
LSTAT: int
FSYNC: int
COPY_COMPARE: int
OWNED: int
NO_XATTRS: int
SOURCES: int
NOT_REGULAR: int
CHANGED: int
TOO_BIG: int
SPARSE: int
NOT_PLAIN: int
TMP_SUFFIX: bytes
NAME_MAX: int
MISMATCH: int
NOT_OURS: int
COMPARE_CHUNK: int
RENAME_NOREPLACE: int
FALLBACK_ERRNOS: tuple[int, ...]
NO_REFLINK_ERRNOS: tuple[int, ...]

def copy_many(
    items: list[tuple[bytes, int, bytes]] | list[tuple[int, bytes, int, bytes]],
    flags: int,
    max_size: int,
    token: bytes,
    /,
) -> tuple[
    list[int],
    list[tuple[int, int, int] | None],
    bool,
    bool,
    list[tuple[int, int, int, int, int, int] | None] | None,
]: ...
def unlink_many(
    sources: list[tuple[bytes, int, int, int, int, int, bytes, int]]
    | list[tuple[bytes, int, int, int, int, int, bytes, int, int]],
    /,
) -> list[int]: ...
