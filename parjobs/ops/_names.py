"""Who owns a temporary name: per-job name tokens, and the one test of "this is mine".

Every temporary or partial file parjobs writes next to a user's files carries the writing
job's *name token*: 16 random hex digits made when the job first runs, stored in its state
(and checkpointed) before the job writes anything, so every later run of the same job knows
it, and nobody else's file can carry it by accident. The formats::

    .<name>.<token>.<16 random hex>.parjobs-tmp     one-shot temporaries (copy, thumbnails,
                                                   trash info files, checksum files)
    .<name>.<token>.parjobs-partial                resumable partials (deterministic per
    .<name>.<token>.parjobs-partial.meta           job and name, so a resume finds them)
    .<name>.<token>.parjobs-undo                   a file undo took aside (not a temporary:
                                                   the undo's next run removes or restores it)

(``<name>`` is replaced by ``parjobs`` or a hash of it when the name would be too long.)
Cleanup removes a file only when `is_own_temp` says it carries this job's token: never a
user's file named like a temporary, never another job's temporary. Nothing here imports trio.
"""

from __future__ import annotations

import os
import re
import secrets
from typing import Any, Protocol

TMP_SUFFIX = b".parjobs-tmp"
PARTIAL_SUFFIX = b".parjobs-partial"
META_SUFFIX = PARTIAL_SUFFIX + b".meta"
#: A file undo took aside to check and remove (never a temporary: it may have to go back).
HELD_SUFFIX = b".parjobs-undo"
#: Where a job keeps its token in ``ctx.state``.
TOKEN_KEY = "name_token"
TOKEN_LEN = 16

_TOKEN = re.compile(rb"[0-9a-f]{16}")


class _Context(Protocol):
    state: dict[str, Any]

    async def checkpoint(self, *, force: bool = False, save_progress: bool = False) -> None: ...


def new_token() -> bytes:
    """A fresh name token: 16 lowercase hex digits (64 random bits)."""
    return secrets.token_hex(TOKEN_LEN // 2).encode()


def check_token(token: str | bytes) -> bytes:
    """``token`` as bytes; ValueError unless it is 16 lowercase hex digits."""
    raw = os.fsencode(token)
    if not _TOKEN.fullmatch(raw):
        raise ValueError(f"not a name token (16 lowercase hex digits): {token!r}")
    return raw


def stored_token(state: dict[str, Any]) -> bytes | None:
    """The job's token if its state holds a valid one (cleanup: None means the job never
    wrote a temporary, so there is nothing of its own to remove)."""
    value = state.get(TOKEN_KEY)
    if isinstance(value, str) and _TOKEN.fullmatch(value.encode()):
        return value.encode()
    return None


async def job_token(ctx: _Context) -> bytes:
    """The job's name token, made and checkpointed on its first call: once this returns,
    a kill -9 cannot make a later run forget which temporaries are this job's."""
    token = stored_token(ctx.state)
    if token is None:
        token = new_token()
        ctx.state[TOKEN_KEY] = token.decode()
        await ctx.checkpoint(force=True)
    return token


def is_own_temp(name: bytes, token: bytes) -> bool:
    """Whether the leaf ``name`` is a temporary or partial carrying ``token`` (see the
    module docstring for the formats). Anything else is somebody else's."""
    if not name.startswith(b"."):
        return False
    if name.endswith(TMP_SUFFIX):
        head, _, rand = name[: -len(TMP_SUFFIX)].rpartition(b".")
        return bool(_TOKEN.fullmatch(rand)) and head.endswith(b"." + token)
    for suffix in (META_SUFFIX, PARTIAL_SUFFIX):
        if name.endswith(suffix):
            return name[: -len(suffix)].endswith(b"." + token) and len(name) > len(suffix) + 17
    return False


__all__ = [
    "HELD_SUFFIX",
    "META_SUFFIX",
    "PARTIAL_SUFFIX",
    "TMP_SUFFIX",
    "TOKEN_KEY",
    "check_token",
    "is_own_temp",
    "job_token",
    "new_token",
    "stored_token",
]
