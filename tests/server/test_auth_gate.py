"""The token gate's looks at its token file (`AuthGate`, in-process, virtual time): at most
one every `TOKEN_FILE_FRESH` seconds, each in a thread, and a token taken out of the file is
refused within that bound; a rewrite that leaves the file's ``stat`` as it was is seen."""

from __future__ import annotations

import os

import pytest
import trio
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
    tmp_path, autojump_clock: trio.abc.Clock
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
    await trio.sleep(TOKEN_FILE_FRESH / 2)
    assert await status(gate, BOB) == 200  # the last look holds: no read per request
    await trio.sleep_until(looked + TOKEN_FILE_FRESH)
    assert (await status(gate, BOB), await status(gate, ADMIN)) == (401, 200)


async def test_a_rewrite_that_leaves_the_stat_as_it_was_is_seen(
    tmp_path, autojump_clock: trio.abc.Clock
) -> None:
    """The gate told a changed file by its ``stat`` (inode, size, mtime, ctime, mode): a
    token replaced in place by one of the same length within one timestamp tick (a few ms)
    went unnoticed, and the removed token kept working. The bytes are compared now."""
    for attempt in range(50):  # until the rewrite falls within the tick of the first look
        path = write_tokens(str(tmp_path / f"tokens{attempt}"))
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
    await trio.sleep(TOKEN_FILE_FRESH)
    assert (await status(gate, BOB), await status(gate, EVE)) == (401, 200)
