"""Types of the optional C extension built from _fastscan.c."""

from collections.abc import Callable
from typing import Any

API: int
CONTENT_ID_SMALL_LIMIT: int
CONTENT_ID_BLOCK: int
CONTENT_ID_SAMPLES: int
CONTENT_ID_ALIGN: int
NOT_REGULAR: int
CHANGED: int
STOPPED: int
UNSTABLE_INODES: tuple[int, ...]

def content_ids(
    items: list[tuple[bytes, int]], stop: bytearray | None = None, /
) -> list[str | int]: ...
def full_hashes(
    items: list[tuple[bytes, int]], stop: bytearray | None = None, /
) -> list[str | int]: ...
def scan_dir(
    path: bytes, follow: bool, expect: tuple[int, int] | None = None, /
) -> list[tuple[bytes, tuple[int, int, int, int, int, int] | None, str]]: ...

_Pending = tuple[bytes, bytes, tuple[int, int], frozenset[tuple[int, int]]]

def walk_dir(
    path: bytes,
    follow: bool,
    expect: tuple[int, int],
    rel: bytes,
    root: int,
    index: int,
    ancestors: frozenset[tuple[int, int]],
    utf8: bool,
    /,
) -> tuple[list[Any], bytes | None, list[_Pending]]: ...
def entry_class(cls: type, fields: tuple[str, ...], /) -> None: ...
def scan_tree(
    roots: list[bytes], min_size: int, stopped: Callable[[], bool] | bytearray, /
) -> tuple[list[tuple[int, bytes, int]], list[tuple[bytes, str]], int] | None: ...
def report_groups(
    files: list[tuple[int, bytes, int]], found: list[tuple[int, str, list[int]]], /
) -> tuple[list[dict[str, Any]], str | None]: ...
def group_lines(groups: list[Any], size: Callable[[int], str], /) -> list[str] | None: ...
def xxh3_vector() -> str: ...
def _force_xxh3_vector(name: str | None, /) -> None: ...
