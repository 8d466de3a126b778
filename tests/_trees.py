"""Small file-tree helpers shared by the operation tests and the reliability suite (whose
crash-test children import them too, so this module depends on nothing but xxhash)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import xxhash


def write(path: Path | bytes | str, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)


def read(path: Path | bytes | str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def snapshot(root: Path | str | bytes) -> dict[bytes, tuple[str, str]]:
    """Every entry below ``root``: relative bytes path -> (kind, xxh3 digest / link target).
    Special files are listed, never opened."""
    top = os.fsencode(root)
    out: dict[bytes, tuple[str, str]] = {}
    for d, dirs, files in os.walk(top):
        for name in dirs + files:
            path = os.path.join(d, name)
            st = os.lstat(path)
            rel = os.path.relpath(path, top)
            if stat.S_ISLNK(st.st_mode):
                out[rel] = ("link", os.fsdecode(os.readlink(path)))
            elif stat.S_ISDIR(st.st_mode):
                out[rel] = ("dir", "")
            elif stat.S_ISREG(st.st_mode):
                out[rel] = ("file", xxhash.xxh3_128_hexdigest(read(path)))
            else:
                out[rel] = ("special", "")
    return out
