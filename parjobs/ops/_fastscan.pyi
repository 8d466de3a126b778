"""Types of the optional C extension built from _fastscan.c."""

from collections.abc import Callable

API: int
CONTENT_ID_SMALL_LIMIT: int
CONTENT_ID_BLOCK: int
CONTENT_ID_SAMPLES: int
CONTENT_ID_ALIGN: int
NOT_REGULAR: int
CHANGED: int

def content_ids(items: list[tuple[bytes, int]], /) -> list[str | int]: ...
def scan_dir(
    path: bytes, follow: bool, /
) -> list[tuple[bytes, tuple[int, int, int, int, int, int] | None, str]]: ...
def scan_tree(
    roots: list[bytes], min_size: int, stopped: Callable[[], bool] | bytearray, /
) -> tuple[list[tuple[int, bytes, int]], list[tuple[bytes, str]], int] | None: ...
def xxh3_vector() -> str: ...
def _force_xxh3_vector(name: str | None, /) -> None: ...
