"""The token gate's looks at its token file (`AuthGate`, in-process, virtual time): at most
one every `TOKEN_FILE_FRESH` seconds, each in a thread, and a token taken out of the file is
refused within that bound; a rewrite that leaves the file's ``stat`` as it was is seen.

Virtual time moves only by the tests' own ``jump`` (`mock_clock`): with an autojump clock a
look's thread descheduled past the threshold on a loaded machine let time jump past
`TOKEN_FILE_WAIT`, and the request was answered 503 (seen at load 19)."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio
import trio.testing
from _server import ADMIN, BOB, write_tokens

from parjobs.server._auth import TOKEN_FILE_FRESH, AuthGate, load_tokens

#: A token as long as `BOB`'s: put in its place, the file keeps its size.
EVE = "eve-token-0123456789abcdefgh"
assert len(EVE) == len(BOB)


async def _ok(scope: object, receive: object, send: object) -> None:
    """The app behind the gate: 200 to every request."""
    await send({"type": "http.response.start", "status": 200, "headers": []})  # type: ignore[operator]
    await send({"type": "http.response.body", "body": b""})  # type: ignore[operator]


async def status(gate: AuthGate, token: str) -> int:
    """The status the gate (and `_ok`) answer a GET /api/jobs with ``token``."""
    sent: list[dict[str, object]] = []

    async def send(message: dict[str, object]) -> None:
        sent.append(message)

    async def receive() -> dict[str, object]:
        return {"type": "http.request", "body": b""}

    scope = {
        "type": "http",
        "method": "GET",
        "path": "/api/jobs",
        "query_string": b"",
        "headers": [(b"authorization", f"Bearer {token}".encode()), (b"host", b"localhost")],
    }
    await gate(scope, receive, send)  # type: ignore[arg-type]
    code = sent[0]["status"]
    assert isinstance(code, int)
    return code


def gate_on(path: str) -> AuthGate:
    return AuthGate(_ok, tokens=load_tokens(path), token_file=path)


async def test_a_token_taken_out_is_refused_within_the_bound_and_not_looked_for_per_request(
    tmp_path, mock_clock: trio.testing.MockClock
) -> None:
    """The gate stat'ed the file on the event loop per request and per event-stream chunk
    (a hung NFS home stalled the whole server). It looks in a thread, at most every
    `TOKEN_FILE_FRESH` seconds: within that the last look holds, after it the file is read
    again and a token taken out is refused."""
    path = write_tokens(str(tmp_path / "tokens"))
    gate = gate_on(path)
    assert await status(gate, BOB) == 200
    looked = trio.current_time()
    new = tmp_path / "tokens.new"
    new.write_text(f"{ADMIN}\n")
    os.chmod(new, 0o600)
    os.replace(new, path)
    mock_clock.jump(TOKEN_FILE_FRESH / 2)
    assert await status(gate, BOB) == 200  # the last look holds: no read per request
    mock_clock.jump(looked + TOKEN_FILE_FRESH - trio.current_time())
    assert (await status(gate, BOB), await status(gate, ADMIN)) == (401, 200)


@pytest.fixture
def coarse_fs(tmp_path: Path) -> Iterator[Path]:
    """A filesystem whose timestamps tick once a second (ext4 with 128-byte inodes, which
    hold no nanoseconds), mounted from an image at ``tmp_path/coarse``; skips where it
    cannot be made or mounted (not root, no loop device). This kernel's own filesystems
    (6.13+: ext4, tmpfs, xfs, btrfs) give a file's ctime a fine tick once it is read, so
    no rewrite leaves the ``stat`` a look saw as it was."""
    image, mounted = tmp_path / "coarse.img", tmp_path / "coarse"
    if shutil.which("mkfs.ext4") is None:
        pytest.skip("mkfs.ext4 is not installed")
    with open(image, "wb") as f:
        f.truncate(2 << 20)
    mkfs = ["mkfs.ext4", "-q", "-F", "-I", "128", "-O", "^has_journal", str(image)]
    if subprocess.run(mkfs, capture_output=True).returncode:
        pytest.skip("mkfs.ext4 failed")
    mounted.mkdir()
    proc = subprocess.run(["mount", "-o", "loop", str(image), str(mounted)], capture_output=True)
    if proc.returncode:
        pytest.skip(f"cannot mount a loop device here: {proc.stderr.decode().strip()}")
    try:
        yield mounted
    finally:
        subprocess.run(["umount", str(mounted)], capture_output=True)


async def test_a_rewrite_that_leaves_the_stat_as_it_was_is_seen(
    coarse_fs: Path, mock_clock: trio.testing.MockClock
) -> None:
    """The gate told a changed file by its ``stat`` (inode, size, mtime, ctime, mode): a
    token replaced in place by one of the same length within one timestamp tick (a second
    on this filesystem, a few ms on older kernels' ext4) went unnoticed, and the removed
    token kept working. The bytes are compared now."""
    for attempt in range(50):  # until the rewrite falls within the tick of the first look
        path = write_tokens(str(coarse_fs / f"tokens{attempt}"))
        before = os.stat(path)
        gate = gate_on(path)
        assert await status(gate, BOB) == 200  # (the first look: the file as written)
        with open(path, "r+") as f:
            text = f.read()
            f.seek(0)
            f.write(text.replace(BOB, EVE))
        os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
        after = os.stat(path)
        if (after.st_ino, after.st_size, after.st_mtime_ns, after.st_ctime_ns) == (
            before.st_ino,
            before.st_size,
            before.st_mtime_ns,
            before.st_ctime_ns,
        ):
            break
    else:
        pytest.skip("no rewrite within one timestamp tick in 50 tries")
    mock_clock.jump(TOKEN_FILE_FRESH)
    assert (await status(gate, BOB), await status(gate, EVE)) == (401, 200)
