"""HashJob through a real manager and store: digests, resume, checksum files, failures."""

from __future__ import annotations

import collections
import os
import shutil
import socket
import stat
import subprocess
import threading
import time

import pytest
import trio
import xxhash

import parjobs
from parjobs import JobStatus
from parjobs.ops import _entries as entries_mod
from parjobs.ops._hash import HashJob, HashLog, checksum_line, write_checksums
from parjobs.ops._hashing import hash_file

HASHERS = {"xxh3_128": xxhash.xxh3_128, "xxh3_64": xxhash.xxh3_64, "xxh64": xxhash.xxh64}


async def digests_of(manager, job_id: str, job: HashJob) -> dict[str, str]:
    """The job's digests, ``path -> hex``, from its item log (the result holds counts only)."""
    log = HashLog()
    log.add(await manager.items(job_id, action="hashed"))
    return {os.fsdecode(p): d for p, (d, _) in log.rows(job.paths, job.names).items()}


def _tree(root) -> dict[str, bytes]:
    """A small tree: nested files, an empty one, a multi-chunk one, a symlink and a FIFO."""
    files = {
        "top.txt": b"top\n",
        "empty": b"",
        "a/one.bin": os.urandom(70_000),
        "a/b/c/deep.txt": b"deep " * 1000,
        "a/b/big.bin": os.urandom(9 << 20),  # nine 1 MiB reads
        "z/name with spaces": b"spaces",
    }
    for rel, data in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    os.symlink(root / "top.txt", root / "a" / "link")
    os.mkfifo(root / "z" / "fifo")
    return {str(root / rel): data for rel, data in files.items()}


@pytest.mark.parametrize("algorithm", ["xxh3_128", "xxh3_64", "xxh64"])
async def test_digests_equal_xxhash_for_every_algorithm(store_path, tmp_path, algorithm):
    files = _tree(tmp_path / "t")
    job = HashJob(paths=[str(tmp_path / "t")], algorithm=algorithm)
    async with parjobs.open_manager(store_path) as manager:
        handle = await manager.submit(job)
        result = await handle.result()
        info = await handle.info()
        digests = await digests_of(manager, handle.id, job)
    expected = {p: HASHERS[algorithm](d).hexdigest() for p, d in files.items()}
    assert digests == expected
    assert "digests" not in result, "the job row holds counts only: digests are in the log"
    total = sum(len(d) for d in files.values())
    assert result["files"] == len(files) and result["bytes"] == total
    assert (result["skipped"], result["failed"], result["algorithm"]) == (2, 0, algorithm)
    assert info.status is JobStatus.COMPLETED
    assert info.progress.bytes_done == info.progress.bytes_total == total


async def test_symlinks_and_special_files_are_reported_as_skipped(store_path, tmp_path):
    _tree(tmp_path / "t")
    link = str(tmp_path / "link")  # (outside t: one inside is t's, walked once)
    os.symlink(tmp_path / "t" / "top.txt", link)
    async with parjobs.open_manager(store_path) as manager:
        # a symlink given directly is not followed either
        job = HashJob(paths=[str(tmp_path / "t"), link])
        handle = await manager.submit(job)
        result = await handle.result()
        info = await handle.info()
        digests = await digests_of(manager, handle.id, job)
    assert link not in digests and len(digests) == 6
    assert result["skipped"] == 3
    assert info.progress.items_skipped == 3


async def test_a_pseudo_file_fails_rather_than_hash_as_empty(store_path, tmp_path):
    """``/proc/self/status`` says 0 bytes and reads more: it was hashed as empty input (the
    digest of nothing, reported hashed, which ``xxhsum -c`` then refutes). It fails now."""
    pseudo = "/proc/self/status"
    if not os.path.isfile(pseudo):
        pytest.skip(f"no {pseudo} here")
    async with parjobs.open_manager(store_path) as manager:
        handle = await manager.submit(HashJob(paths=[pseudo]))
        assert await handle.wait() is JobStatus.COMPLETED_WITH_ERRORS
        (error,) = await manager.errors(handle.id)
    assert error.label == pseudo and "pseudo-file" in error.message


async def test_pause_mid_way_then_resume_hashes_each_file_once(store_path, tmp_path, monkeypatch):
    root = tmp_path / "t"
    root.mkdir()
    n = 60
    for i in range(n):
        (root / f"f{i:02}").write_bytes(os.urandom(64 * 1024 + i))
    completed: collections.Counter[str] = collections.Counter()
    lock = threading.Lock()
    real = hash_file

    def slow_hash(path, **kwargs):
        time.sleep(0.01)
        digest = real(path, **kwargs)  # raises PauseRequested at its first check when pausing
        with lock:
            completed[os.fsdecode(path)] += 1
        return digest

    monkeypatch.setattr(entries_mod, "hash_file", slow_hash)
    job = HashJob(paths=[str(root)])
    async with parjobs.open_manager(store_path, workers=2) as manager:
        handle = await manager.submit(job)
        with trio.fail_after(10):
            while sum(completed.values()) < n // 4:
                await trio.sleep(0.005)
        await manager.pause(handle.id)
        assert await handle.wait() is JobStatus.PAUSED
        paused = await handle.info()
        assert 0 < paused.done_items < n
        assert paused.done_bytes == sum(os.path.getsize(p) for p in completed), (
            "every finished file is checkpointed"
        )

        await manager.resume(handle.id)
        snaps = [s async for s in handle.progress()]
        result = await handle.result()
        digests = await digests_of(manager, handle.id, job)
    total = sum(os.path.getsize(root / f"f{i:02}") for i in range(n))
    expected = {
        str(root / f"f{i:02}"): xxhash.xxh3_128((root / f"f{i:02}").read_bytes()).hexdigest()
        for i in range(n)
    }
    assert digests == expected, "digests of the first run are in the log once"
    assert list(digests) == sorted(digests), "in walk order"
    assert (result["files"], result["bytes"]) == (n, total)
    assert set(completed.values()) == {1} and len(completed) == n, "each file hashed once"
    assert snaps[0].bytes_done >= paused.done_bytes
    assert snaps[-1].bytes_done == total and snaps[-1].items_done == n


async def test_output_file_is_xxhsum_format_and_replaces_digests(store_path, tmp_path):
    files = _tree(tmp_path / "t")
    odd = tmp_path / "t" / "new\nline"
    odd.write_bytes(b"odd")
    out = tmp_path / "out" / "sums.xxh128"
    out.parent.mkdir()
    out.write_text("old content\n")
    async with parjobs.open_manager(store_path) as manager:
        handle = await manager.submit(HashJob(paths=[str(tmp_path / "t")], output=str(out)))
        result = await handle.result()
    assert "digests" not in result and result["output"] == str(out)
    lines = out.read_bytes().splitlines(keepends=True)
    assert len(lines) == len(files) + 1
    assert os.listdir(out.parent) == ["sums.xxh128"], "no temporary file is left behind"
    for path, data in files.items():
        assert f"{xxhash.xxh3_128(data).hexdigest()}  {path}\n".encode() in lines
    escaped = str(tmp_path / "t").encode() + b"/new\\nline"
    assert b"\\" + xxhash.xxh3_128(b"odd").hexdigest().encode() + b"  " + escaped + b"\n" in lines
    # walk order: the files of a directory come before those of its subdirectories
    order = [line.split(b"  ", 1)[1].rstrip(b"\n") for line in lines]
    assert order.index(str(tmp_path / "t/top.txt").encode()) < order.index(
        str(tmp_path / "t/a/one.bin").encode()
    )


async def test_a_checksum_file_inside_the_tree_never_lists_itself(store_path, tmp_path):
    """``hash t -o t/SUMS`` run again (a new job; or through a symlinked root): the tree's
    old checksum file was hashed, then replaced, and the new one listed it with the old
    file's digest, a line that could never check. Another name of its inode is hashed."""
    files = _tree(tmp_path / "t")
    out = tmp_path / "t" / "SUMS"
    (tmp_path / "link").symlink_to(tmp_path / "t")
    for paths in ([str(tmp_path / "t")], [str(tmp_path / "t")], [str(tmp_path / "link") + "/"]):
        info = await _hash_to(store_path, paths, out)
        assert info.status is JobStatus.COMPLETED
        assert info.result["files"] == len(files)
        shown = {line.split(b"  ", 1)[1].rstrip(b"\n") for line in out.read_bytes().splitlines()}
        assert not any(name.endswith(b"/SUMS") for name in shown), shown
    os.link(out, tmp_path / "t" / "a" / "sums-copy")  # the same inode, another name: hashed
    data = out.read_bytes()
    info = await _hash_to(store_path, [str(tmp_path / "t")], out)
    expected = {**files, str(tmp_path / "t" / "a" / "sums-copy"): data}
    assert set(out.read_bytes().splitlines(keepends=True)) == _expected(expected)


def test_checksum_line_formats():
    assert checksum_line("xxh3_128", b"a b", "00ff") == b"00ff  a b\n"
    assert checksum_line("xxh64", b"x", "12") == b"12  x\n"
    assert checksum_line("xxh3_64", b"x", "12") == b"XXH3 (x) = 12\n"
    assert checksum_line("xxh3_128", b"a\\b\nc", "0f") == b"\\0f  a\\\\b\\nc\n"


@pytest.mark.skipif(shutil.which("xxhsum") is None, reason="xxhsum is not installed")
@pytest.mark.parametrize("algorithm", ["xxh3_128", "xxh3_64", "xxh64"])
async def test_output_file_checks_with_xxhsum(store_path, tmp_path, algorithm):
    _tree(tmp_path / "t")
    out = tmp_path / "sums"
    async with parjobs.open_manager(store_path) as manager:
        handle = await manager.submit(
            HashJob(paths=[str(tmp_path / "t")], algorithm=algorithm, output=str(out))
        )
        await handle.result()
    check = subprocess.run(["xxhsum", "-c", str(out)], capture_output=True, timeout=30)
    assert check.returncode == 0, check.stdout + check.stderr
    assert check.stdout.count(b": OK") == 6


async def test_vanished_file_fails_alone_with_a_clear_reason(store_path, tmp_path, monkeypatch):
    files = _tree(tmp_path / "t")
    victim = str(tmp_path / "t" / "a" / "one.bin")
    real = hash_file

    def vanishing(path, **kwargs):
        if os.fsdecode(path) == victim:
            os.unlink(path)  # deleted between the walk and the hash
        return real(path, **kwargs)

    monkeypatch.setattr(entries_mod, "hash_file", vanishing)
    missing = str(tmp_path / "not-there")
    async with parjobs.open_manager(store_path) as manager:
        job = HashJob(paths=[str(tmp_path / "t"), missing])
        handle = await manager.submit(job)
        result = await handle.result()
        info = await handle.info()
        errors = sorted(await manager.errors(handle.id), key=lambda e: e.label)
        digests = await digests_of(manager, handle.id, job)
    assert info.status is JobStatus.COMPLETED_WITH_ERRORS
    assert result["failed"] == 2
    assert sorted(digests) == sorted(p for p in files if p != victim)
    assert [e.label for e in errors] == sorted([victim, missing])
    assert all("No such file or directory" in e.message for e in errors)
    assert {e.error for e in errors} == {"FileNotFoundError", "OSError"}


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        ({"paths": []}, "no paths"),
        ({"paths": ["x"], "algorithm": "md5"}, "md5"),
        ({"paths": ["x"], "output": "."}, "is a directory"),
        ({"paths": ["x"], "output": "/no/such/dir/sums"}, "does not exist"),
    ],
)
async def test_bad_specs_are_refused_on_submit(store_path, spec, match):
    async with parjobs.open_manager(store_path) as manager:
        with pytest.raises(parjobs.JobSpecError, match=match):
            await manager.submit(HashJob(**spec))
        assert await manager.list_jobs() == []


# -- where the checksum file goes: regular files replaced atomically, the rest in place ------

ROOT = os.geteuid() == 0


def _device(path, major: int, minor: int, kind: int = stat.S_IFCHR) -> str:
    """A device node in tmp_path (root only): a stand-in for /dev/null or /dev/full that a
    regression could replace without harming the machine's own."""
    os.mknod(path, kind | 0o666, os.makedev(major, minor))
    return str(path)


def _expected(files: dict[str, bytes]) -> set[bytes]:
    return {f"{xxhash.xxh3_128(d).hexdigest()}  {p}\n".encode() for p, d in files.items()}


def _leftovers(*dirs) -> list[str]:
    return [n for d in dirs for n in os.listdir(d) if ".parjobs" in n]


async def _hash_to(store_path, paths, output):
    async with parjobs.open_manager(store_path) as manager:
        handle = await manager.submit(HashJob(paths=paths, output=str(output)))
        with trio.fail_after(30):
            await handle.wait()
        return await handle.info()


async def test_output_to_a_null_device_writes_in_place_and_keeps_the_node(store_path, tmp_path):
    files = {str(tmp_path / "a.txt"): b"a"}
    (tmp_path / "a.txt").write_bytes(b"a")
    null = _device(tmp_path / "null", 1, 3) if ROOT else "/dev/null"
    info = await _hash_to(store_path, [str(tmp_path / "a.txt")], null)
    assert info.status is JobStatus.COMPLETED, info.error
    assert info.result["output"] == null and "digests" not in info.result
    assert stat.S_ISCHR(os.lstat(null).st_mode) and os.lstat(null).st_rdev == os.makedev(1, 3)
    assert _leftovers(os.path.dirname(null)) == []
    assert files  # (the digests went nowhere, as asked)


def test_a_checksum_file_written_to_a_terminal_cannot_redraw_it(tmp_path):
    """``hash -o /dev/tty`` (or ``-o /dev/stdout`` on a terminal) wrote each name's control
    characters raw to the terminal: a name holding ``ESC [ 2 K ESC [ G`` and a path erased
    its own start and showed as that path. Written to a terminal, a line's controls are
    escaped as the CLI prints them there (`printable`); to a file or FIFO, the names' own
    bytes. (~0.01 s)"""
    name = b"a\x1b[2K\x1b[Gevil\xff"
    master, slave = os.openpty()
    try:
        write_checksums(os.ttyname(slave), "md5", [(name, "00" * 16)])
        got = os.read(master, 4096)
    finally:
        os.close(master)
        os.close(slave)
    assert got == b"00" * 16 + b"  a\\x1b[2K\\x1b[Gevil\\xff\r\n"
    (tmp_path / "sums").write_bytes(b"")
    write_checksums(str(tmp_path / "sums"), "md5", [(name, "00" * 16)])
    assert (tmp_path / "sums").read_bytes() == b"00" * 16 + b"  " + name + b"\n"


@pytest.mark.skipif(not ROOT, reason="needs root to make a /dev/full device node (mknod)")
async def test_output_to_a_full_device_fails_with_enospc_and_keeps_the_node(store_path, tmp_path):
    (tmp_path / "t").mkdir()
    (tmp_path / "t" / "a.txt").write_bytes(b"a")
    for full in (_device(tmp_path / "full", 1, 7), "/dev/full"):
        info = await _hash_to(store_path, [str(tmp_path / "t")], full)
        assert info.status is JobStatus.FAILED
        assert "No space left on device" in info.error and full in info.error, info.error
        st = os.lstat(full)
        assert stat.S_ISCHR(st.st_mode) and st.st_rdev == os.makedev(1, 7)
        assert _leftovers(os.path.dirname(full)) == []


async def test_output_to_a_fifo_waits_for_its_reader_and_keeps_the_fifo(store_path, tmp_path):
    files = _tree(tmp_path / "t")
    fifo = tmp_path / "sums.fifo"
    os.mkfifo(fifo)
    got: list[bytes] = []

    def reader() -> None:
        time.sleep(0.5)  # the job reaches the output first and must wait for a reader
        with open(fifo, "rb") as f:
            got.append(f.read())

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        info = await _hash_to(store_path, [str(tmp_path / "t")], fifo)
    finally:
        thread.join(10)
    assert info.status is JobStatus.COMPLETED, info.error
    assert set(got[0].splitlines(keepends=True)) == _expected(files)
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
    assert _leftovers(tmp_path) == []


async def test_a_job_waiting_for_a_fifo_reader_can_be_paused_then_resumed(store_path, tmp_path):
    (tmp_path / "a.txt").write_bytes(b"a")
    fifo = tmp_path / "sums.fifo"
    os.mkfifo(fifo)
    async with parjobs.open_manager(store_path) as manager:
        handle = await manager.submit(HashJob(paths=[str(tmp_path / "a.txt")], output=str(fifo)))
        with trio.fail_after(10):
            async for snap in handle.progress():
                if snap.message == f"writing {fifo}":
                    break
            await trio.sleep(0.2)  # waiting for a reader
            await manager.pause(handle.id)
            assert await handle.wait() is JobStatus.PAUSED
        got: list[bytes] = []
        thread = threading.Thread(target=lambda: got.append(fifo.read_bytes()))
        thread.start()
        await manager.resume(handle.id)
        with trio.fail_after(10):
            result = await handle.result()
        thread.join(10)
    assert result["output"] == str(fifo)
    assert got == [f"{xxhash.xxh3_128(b'a').hexdigest()}  {tmp_path / 'a.txt'}\n".encode()]
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)


async def test_output_through_a_symlink_replaces_its_target_atomically(store_path, tmp_path):
    """Written through, as shells and most tools do: the link stays a link, the regular file
    it names is replaced by rename in its own directory, keeping its permission bits."""
    files = _tree(tmp_path / "t")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    real = elsewhere / "sums.txt"
    real.write_text("old\n")
    real.chmod(0o600)
    links = tmp_path / "links"
    links.mkdir()
    os.symlink(real, links / "sums")
    os.symlink(elsewhere / "new.txt", links / "dangling")
    for link, target in ((links / "sums", real), (links / "dangling", elsewhere / "new.txt")):
        info = await _hash_to(store_path, [str(tmp_path / "t")], link)
        assert info.status is JobStatus.COMPLETED, info.error
        assert os.path.islink(link) and os.readlink(link) == str(target)
        assert set(target.read_bytes().splitlines(keepends=True)) == _expected(files)
    assert stat.S_IMODE(real.stat().st_mode) == 0o600
    assert _leftovers(links, elsewhere) == []


async def test_output_through_a_symlink_to_a_device_writes_in_place(store_path, tmp_path):
    """Like ``--output /dev/stdout`` (a link to /proc/self/fd/1): neither the link nor the
    device it names is replaced."""
    (tmp_path / "a.txt").write_bytes(b"a")
    null = _device(tmp_path / "null", 1, 3) if ROOT else "/dev/null"
    os.symlink(null, tmp_path / "stdout")
    info = await _hash_to(store_path, [str(tmp_path / "a.txt")], tmp_path / "stdout")
    assert info.status is JobStatus.COMPLETED, info.error
    assert os.readlink(tmp_path / "stdout") == null
    assert stat.S_ISCHR(os.lstat(null).st_mode)
    assert _leftovers(tmp_path) == []


async def test_output_onto_a_socket_or_block_device_is_refused_on_submit(store_path, tmp_path):
    targets = []
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(tmp_path / "sock"))
    targets.append((str(tmp_path / "sock"), "not a regular file, device or FIFO"))
    if ROOT:
        disk = _device(tmp_path / "disk", 7, 0, stat.S_IFBLK)
        targets.append((disk, "block device"))
    try:
        async with parjobs.open_manager(store_path) as manager:
            for target, message in targets:
                with pytest.raises(parjobs.JobSpecError, match=message):
                    await manager.submit(HashJob(paths=[str(tmp_path)], output=target))
            assert await manager.list_jobs() == []
    finally:
        sock.close()
    assert stat.S_ISSOCK(os.lstat(tmp_path / "sock").st_mode)
    if ROOT:
        assert stat.S_ISBLK(os.lstat(tmp_path / "disk").st_mode)


@pytest.mark.parametrize(
    ("paths", "names", "reason"),
    [
        (["/a", "/b"], ["a"], "1 names for 2 paths"),
        (["/a"], [""], "invalid name"),
        (["/a"], ["x\0"], "invalid name"),
    ],
)
def test_names_are_checked(paths: list[str], names: list[str], reason: str) -> None:
    with pytest.raises(parjobs.JobSpecError, match=reason):
        HashJob(paths=paths, names=names).validate()


async def test_names_replace_each_root_in_digests(store_path, tmp_path):
    files = _tree(tmp_path / "t")
    (tmp_path / "one").write_bytes(b"1")
    job = HashJob(
        paths=[str(tmp_path / "t"), str(tmp_path / "t" / "a"), str(tmp_path / "one")],
        names=["t/", "t/a", "./one"],
    )
    async with parjobs.open_manager(store_path) as manager:
        handle = await manager.submit(job)
        result = await handle.result()
        digests = await digests_of(manager, handle.id, job)
    expected = {"t/" + os.path.relpath(p, tmp_path / "t") for p in files} | {"./one"}
    assert set(digests) == expected
    assert result["files"] == len(files) + 1


async def test_a_dot_dot_through_a_symlink_is_refused_as_for_copy_and_move(
    store_path, tmp_path, monkeypatch
):
    """``link/../x`` is, for the kernel (and the CLI, which resolves it), the x next to the
    link's target; a hash or duplicates job read it lexically, the x beside the link,
    another file, and a hash's output went beside the link. Refused at submission, as copy
    and move do (`check_dotdot`); an ordinary ``../x`` is taken."""
    from parjobs.ops import DuplicatesJob

    (tmp_path / "real" / "sub").mkdir(parents=True)
    (tmp_path / "real" / "x").write_bytes(b"named")
    (tmp_path / "here").mkdir()
    (tmp_path / "here" / "x").write_bytes(b"beside the link")
    (tmp_path / "here" / "link").symlink_to("../real/sub")
    monkeypatch.chdir(tmp_path / "here")
    async with parjobs.open_manager(store_path) as manager:
        for job in (
            HashJob(paths=["link/../x"]),
            DuplicatesJob(paths=["link/../x"]),
            HashJob(paths=["x"], output="link/../digests"),
        ):
            with pytest.raises(parjobs.JobSpecError, match="follows a symlink"):
                await manager.submit(job)
        job = HashJob(paths=["../real/x"])
        handle = await manager.submit(job)
        assert await handle.wait() is JobStatus.COMPLETED
        digest = xxhash.xxh3_128_hexdigest(b"named")
        assert await digests_of(manager, handle.id, job) == {"../real/x": digest}
    assert not (tmp_path / "here" / "digests").exists()


@pytest.mark.parametrize(
    ("given", "names"),
    [
        (["x", "x/sub"], ["x/a", "x/sub/b"]),
        (["x/sub", "x"], ["x/a", "x/sub/b"]),
        (["x", "./x"], ["x/a", "x/sub/b"]),
        (["x", "link/"], ["x/a", "x/sub/b"]),
        (["link/", "x"], ["link/a", "link/sub/b"]),
        (["x/a", "x", "x/a"], ["x/a", "x/sub/b"]),
    ],
)
async def test_a_file_reached_through_two_paths_is_hashed_and_counted_once(
    store_path, tmp_path, monkeypatch, given, names
):
    """``hash x x/sub`` (or ``x ./x``, ``x link/``, a file given twice) read each file under
    both paths once per path and counted it so (the summary said "2 files hashed (6 B)" for
    4 bytes), while the digests listed it once. As for ``dupes`` (ef90a75), a path inside
    another, or the same as an earlier one, is not walked: each file is read, counted and
    listed once, named by the first path that reaches it (``sha256sum`` prints a file
    given twice twice; a checksum file needs it once)."""
    (tmp_path / "x" / "sub").mkdir(parents=True)
    (tmp_path / "x" / "a").write_bytes(b"a\n")
    (tmp_path / "x" / "sub" / "b").write_bytes(b"bb\n")
    (tmp_path / "link").symlink_to("x")
    monkeypatch.chdir(tmp_path)
    job = HashJob(paths=[os.path.abspath(p) + "/" * p.endswith("/") for p in given], names=given)
    async with parjobs.open_manager(store_path) as manager:
        handle = await manager.submit(job)
        result = await handle.result()
        digests = await digests_of(manager, handle.id, job)
        hashed = await manager.items(handle.id, action="hashed")
        progress = (await manager.get(handle.id)).progress
    assert sorted(digests) == names
    assert len(hashed) == 2, [r.source for r in hashed]
    assert (result["files"], result["bytes"]) == (2, 5)
    assert (progress.items_done, progress.items_total, progress.bytes_total) == (2, 2, 5)


async def test_overlapping_paths_are_skipped_after_a_kill_before_the_first_checkpoint(
    store_path, tmp_path
):
    """Which overlapping paths are not walked was decided on the first run only (``not
    ctx.resumed``, 08236b0): a ``hash x x/sub`` killed -9 before its first checkpoint left no
    decision in the job's state, so its resumed run walked both and counted ``x/sub/b``
    twice ("3 files hashed (8 B)" for 5 bytes). It is decided whenever no earlier run
    recorded the walk."""
    from _forkcli import Forked  # (tests/ is on sys.path: conftest)

    (tmp_path / "x" / "sub").mkdir(parents=True)
    (tmp_path / "x" / "a").write_bytes(b"a\n")
    (tmp_path / "x" / "sub" / "b").write_bytes(b"bb\n")
    held = tmp_path / "held"
    paths = [str(tmp_path / "x"), str(tmp_path / "x" / "sub")]
    # The child's first file read never ends: killed with nothing checkpointed.
    code = f"""if True:
        import time, trio, parjobs
        from parjobs.ops import _entries
        from parjobs.ops._hash import HashJob
        def hold(self, tc, on_bytes):
            open({str(held)!r}, "w").close()
            time.sleep(600)
        _entries.HashTask._hash = hold
        async def main():
            async with parjobs.open_manager({store_path!r}) as m:
                await (await m.submit(HashJob(paths={paths!r}))).wait()
        trio.run(main)
    """
    child = Forked([], code=code)
    try:
        deadline = time.monotonic() + 30
        while not held.exists():
            assert child.poll() is None, child.communicate()
            assert time.monotonic() < deadline
            time.sleep(0.01)
    finally:
        child.kill()
        child.wait()
    async with parjobs.open_manager(store_path) as manager:
        (info,) = await manager.list_jobs()
        assert info.done_items == 0  # nothing checkpointed
        handle = await manager.resume(info.id)
        result = await handle.result()
        hashed = await manager.items(handle.id, action="hashed")
        progress = (await manager.get(handle.id)).progress
    assert sorted(os.fsdecode(r.source) for r in hashed) == [paths[0] + "/a", paths[1] + "/b"]
    assert (result["files"], result["bytes"]) == (2, 5)
    assert (progress.items_done, progress.items_total, progress.bytes_total) == (2, 2, 5)
