"""The content ids' XXH3 in C (`_fastscan`, xxHash's x86 dispatcher) against the Python ids
(the xxhash module), on every kernel this CPU can run: the same ids whatever the width."""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path

import pytest

from parjobs.ops import _hashing
from parjobs.ops._hashing import content_id, content_ids

fastscan = _hashing.fastscan
pytestmark = pytest.mark.skipif(fastscan is None, reason="the C extension _fastscan is not built")

#: File sizes whose content ids (8 bytes of size, then the file or its six 8 KiB blocks) cross
#: XXH3's boundaries: the short inputs (up to 16, 128, 240 bytes), a stripe (64), a block of
#: the default secret (1,024), the largest whole file (102,408 bytes hashed), and the sampled
#: layout (49,152 bytes of a larger file).
SIZES = [0, 1, 8, 9, 120, 121, 232, 233, 1015, 1016, 1017, 4097, 102_400, 102_401, 300_007]


def _kernels() -> list[str]:
    """The kernels XXH3 can be forced onto on this CPU (the widest last)."""
    assert fastscan is not None
    usable = []
    for name in ("scalar", "sse2", "avx2", "avx512", "neon", "vsx"):
        try:
            fastscan._force_xxh3_vector(name)
        except ValueError:
            continue
        usable.append(name)
    fastscan._force_xxh3_vector(None)
    return usable


@pytest.fixture(params=_kernels() if fastscan is not None else [])
def kernel(request: pytest.FixtureRequest) -> Iterator[str]:
    """Run XXH3 on one kernel for the test, then on the widest again."""
    assert fastscan is not None
    fastscan._force_xxh3_vector(request.param)
    try:
        assert fastscan.xxh3_vector() == request.param
        yield str(request.param)
    finally:
        fastscan._force_xxh3_vector(None)


def test_the_widest_kernel_the_cpu_has_is_chosen() -> None:
    """Where the CPU has AVX2 the dispatcher runs it (the point of vendoring it): the
    build's baseline flags alone give SSE2 on x86-64."""
    assert fastscan is not None
    cpuinfo = Path("/proc/cpuinfo")
    flags = cpuinfo.read_text() if cpuinfo.exists() else ""
    if " avx2" not in flags:
        pytest.skip("this CPU has no AVX2")
    assert fastscan.xxh3_vector() == ("avx512" if " avx512f" in flags else "avx2")
    assert _kernels()[-1] == fastscan.xxh3_vector()
    with pytest.raises(ValueError, match="cannot run on 'mmx'"):
        fastscan._force_xxh3_vector("mmx")


def test_content_ids_in_c_are_the_python_ids_on_every_kernel(kernel: str, tmp_path: Path) -> None:
    rng = random.Random(kernel)
    items = []
    for size in SIZES:
        path = tmp_path / f"f{size}"
        path.write_bytes(rng.randbytes(size))
        items.append((bytes(path), size))
    assert content_ids(items) == [content_id(path, size=size) for path, size in items]
