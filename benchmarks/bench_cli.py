"""The command line end to end (issue #18): what a person running ``parjobs`` from a shell
waits for, start-up and exit included, against the tool they would otherwise use.

Every contender is a separate process (``python -m parjobs ...`` with this repository on the
path, stdout a pipe, so plain output), timed from start to exit; rounds alternate and rotate
who goes first; every call gets a fresh destination and a fresh store (not timed). Cases:

* ``startup``: ``python -c "import trio"`` (baseline) against ``parjobs --help``,
  ``parjobs jobs`` and ``parjobs copy`` of one small file;
* ``small``: ``cp -r`` (baseline) against ``parjobs copy`` and ``parjobs copy --verify`` of
  the small-file set (10,000 files of 1-64 KiB in a full run); ``small-3k``: ``cp -r``
  against ``parjobs copy`` of its first 3,000 files (as ``move-tmpfs`` takes them; the whole
  set in quick and tiny runs); beside them, in both, the floor: a Python process that imports
  trio, lists the tree, makes its directories and copies the files with parjobs' C group copy
  (`_fastcopy.copy_many`) on two threads, and nothing else (`SMALL_FLOOR`);
* ``large``: ``cp -r`` against ``parjobs copy`` of the large set (4 x 256 MiB);
* ``big-*`` (#18 target 3): ``cp -r`` against ``parjobs copy`` of 4 x 128 MiB and 4 x 1 GiB
  (4 x 16 and 4 x 64 MiB quick, 4 x 1 MiB tiny; sets of their own, generated once), with
  the cold-ish variants when the run has them (the page cache dropped before every call);
  every call starts with no dirty pages (``sync``, untimed: the 1 GiB set fills the dirty
  limits, and one call's write-back must not slow the next);
  beside them the floor: a Python process that imports trio and copies the files with
  ``copy_file_range`` on two threads and nothing else;
* ``move-tmpfs``: ``mv`` (baseline) against ``parjobs move`` and ``parjobs move --no-verify``
  of 3,000 files of the small-file set (all of it in quick and tiny runs) from the data's
  disk to ``/dev/shm`` (a fresh source copy per call, written back to the disk first,
  untimed: the sources are at rest, as files to be moved are); beside them the floor: the small-file
  floor's copy plus, in C too, what a move adds (each copy compared and fsynced, each new
  directory fsynced, the sources unlinked; `MOVE_FLOOR`);
* ``hash``: ``xxhsum -H2`` (baseline) against ``parjobs hash`` of the large set (4 x 256 MiB
  in a full run) and, as ``hash-halves``, of the same bytes as twice as many files (8 x 128
  MiB); beside them the floor: a Python process that imports trio and hashes the files on
  two threads (xxh3-128, 1 MiB reads) and nothing else;
* ``thumbnails``: ``vipsthumbnail`` run two at a time (baseline: two processes, each given
  half of the photos, as ``xargs -P 2`` would) against ``parjobs thumbnails --out`` and
  one ``vipsthumbnail`` process given all of them, on the first 60 JPEG photos of the data
  set (3000x2000 in a full run), 256 px WebP at quality 80 for every contender;
* ``dupes``: ``jdupes -rq`` (baseline) against ``fdupes -rq`` and ``parjobs dupes`` on two
  copies of real files: ``/usr/share/doc`` and ``/usr/lib/python3`` (full), ``/usr/share/doc``
  (quick), the small-file set (tiny); beside them the floor (`DUPES_FLOOR`): a Python process
  that imports trio, lists the tree in C, groups by size and computes the content ids and
  full hashes the job needs on two threads, and nothing else.

The package is byte-compiled first, as ``pip install`` does (without it every call would
compile parjobs from source and time that). Run it alone with
``python3 -m benchmarks --only cli`` (``--quick`` for the scaled-down sets; ``--cases dupes``
or ``--cases startup,hash`` for some cases only; ``--cases thumbnails`` needs ``vipsthumbnail``,
from ``apt-get install libvips-tools``).
"""

from __future__ import annotations

import compileall
import os
import shlex
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ._common import ROOT, Timing, load_average, log, run_rounds
from ._data import blobs
from ._session import Session
from ._tools import (
    CACHED,
    describe_tools,
    drop_caches,
    expect_tree,
    fresh_dir,
    remove,
    run_tool,
    tree_stats,
    warm,
    which,
)

PARJOBS = [sys.executable, "-m", "parjobs"]
TMPFS = Path("/dev/shm")
#: Files of the small set the move case moves (whole directories, in name order, until reached).
MOVE_FILES = 3_000
#: Where the C extensions are built (the small-file floor loads `_fastcopy` from there).
OPS = ROOT / "parjobs" / "ops"
SMALL_FLOOR_NAME = "floor: import trio, C group copy"
MOVE_FLOOR_NAME = "floor: import trio, C group move"
#: The floor of the hash case: start Python, import trio, hash the files given on two threads.
HASH_FLOOR = """
import sys, threading, trio, xxhash
def digest(paths, out):
    buf = memoryview(bytearray(1 << 20))
    for path in paths:
        h = xxhash.xxh3_128()
        with open(path, "rb", buffering=0) as f:
            while n := f.readinto(buf):
                h.update(buf[:n])
        out.append(h.hexdigest())
out, files = [], sys.argv[1:]
threads = [threading.Thread(target=digest, args=(files[i::2], out)) for i in range(2)]
for t in threads:
    t.start()
for t in threads:
    t.join()
assert len(out) == len(files)
"""
#: The floor of the big-file cases: start Python, import trio, copy the files of a directory
#: into DST/<its name>/ on two threads with copy_file_range (the kernel's copy, as cp's).
COPY_FLOOR = """
import os, sys, threading, trio
src, dst = sys.argv[1], os.path.join(sys.argv[2], os.path.basename(sys.argv[1]))
os.mkdir(dst)
def copy(names):
    for name in names:
        i = os.open(os.path.join(src, name), os.O_RDONLY)
        o = os.open(os.path.join(dst, name), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        size, pos = os.fstat(i).st_size, 0
        while pos < size:
            pos += os.copy_file_range(i, o, size - pos, pos, pos)
        os.close(o)
        os.close(i)
names = sorted(os.listdir(src))
threads = [threading.Thread(target=copy, args=(names[i::2],)) for i in range(2)]
for t in threads:
    t.start()
for t in threads:
    t.join()
"""
#: The floor of the dupes case: start Python, import trio, the scan parjobs makes
#: (`_fastscan.scan_tree`: the tree listed in C, one name per inode, the files sharing their
#: size), the content ids of those files in C on two threads (the GIL released), and the full
#: hash of the files larger than the id covers that share an id, on two threads; nothing else
#: (no store, no tasks, no output).
DUPES_FLOOR = """
import collections, sys, threading, trio, xxhash
from parjobs.ops import _fastscan as fs
files = [(path, size) for _, path, size in fs.scan_tree([sys.argv[1].encode()], 1, bool)[0]]
by_size = collections.defaultdict(list)
for f in files:
    by_size[f[1]].append(f)
todo = [f for same in by_size.values() if len(same) > 1 for f in same]
def both(work, items):
    out = [None, None]
    def half(k):
        out[k] = work(items[k::2])
    threads = [threading.Thread(target=half, args=(k,)) for k in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return [x for k in range(2) for x in out[k]], items[0::2] + items[1::2]
def ids(items):
    return [cid for k in range(0, len(items), 512) for cid in fs.content_ids(items[k : k + 512])]
cids, order = both(ids, todo)
by_id = collections.defaultdict(list)
for f, cid in zip(order, cids):
    by_id[(f[1], cid)].append(f)
limit = fs.CONTENT_ID_SMALL_LIMIT
big = [f for (size, _), same in by_id.items() if len(same) > 1 and size > limit for f in same]
def digests(items):
    buf, out = memoryview(bytearray(1 << 20)), []
    for path, _ in items:
        h = xxhash.xxh3_128()
        with open(path, "rb", buffering=0) as f:
            while n := f.readinto(buf):
                h.update(buf[:n])
        out.append(h.hexdigest())
    return out
if big:
    both(digests, big)
"""
#: The floors of the small-file cases (#18 target 2) and the move case (target 4): start
#: Python, import trio, list the tree (``os.scandir``), make its directories, and run the C
#: group calls parjobs makes (`_fastcopy`, groups of 64, the same flags) on two threads;
#: nothing else (no store, manifest, tasks or records). `_FLOOR_GROUP` is what each group
#: does; the extension is loaded from ``parjobs/ops`` (argv[3]) without importing parjobs.
#: The largest file the floors' C group calls copy (`copy_many`'s ``max_size``); a larger
#: one is the chunked Python path's, so a tree holding one gets no floor (`_floor_fits`).
FLOOR_MAX_SIZE = 8 << 20
_FLOOR = (
    f"MAX_SIZE = {FLOOR_MAX_SIZE}\n"
    + """
import os, sys, threading, trio
sys.path.insert(0, sys.argv[3])
import _fastcopy as fc
flags = fc.MODE | fc.TIMES | fc.REFLINK | fc.RANGE  # a first run's (its walk lstat'ed the files)
src = os.fsencode(sys.argv[1])
items, dirs = [], []
def walk(s, d):
    os.mkdir(d)
    fd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)  # open to the end, as parjobs' tree
    dirs.append(s)
    with os.scandir(s) as it:
        for e in it:
            if e.is_dir(follow_symlinks=False):
                walk(e.path, os.path.join(d, e.name))
            else:
                items.append((e.path, fd, e.name))
walk(src, os.path.join(os.fsencode(sys.argv[2]), os.path.basename(src)))
groups = [items[k : k + 64] for k in range(0, len(items), 64)]
failed = []
def work(mine):
    for group in mine:
        failed.extend(r for r in _FLOOR_GROUP(group) if r)
threads = [threading.Thread(target=work, args=(groups[i::2],)) for i in range(2)]
for t in threads:
    t.start()
for t in threads:
    t.join()
assert not failed, failed[:5]
"""
)
#: The small-file floor: copy (`copy_many`).
SMALL_FLOOR = (
    """
def _FLOOR_GROUP(group):
    return fc.copy_many(group, flags, MAX_SIZE, b"floor")[0]
"""
    + _FLOOR
)
#: The move floor (into another filesystem): what a move's group does, in C too: copy (only
#: plain files: `OWNED`, `NO_XATTRS`), each copy compared with its source and fsynced before
#: its rename (`COPY_COMPARE`, `FSYNC`), each source's identity as copied (`SOURCES`), each
#: new directory fsynced, then the sources unlinked (`unlink_many`: each copy still at its
#: name, each source still the file copied); then the source directories removed.
MOVE_FLOOR = (
    """
def _FLOOR_GROUP(group):
    move = fc.OWNED | fc.NO_XATTRS | fc.COPY_COMPARE | fc.FSYNC | fc.SOURCES
    results, written, _, _, seen = fc.copy_many(group, flags | move, MAX_SIZE, b"floor")
    for fd in {c[1] for c in group}:
        os.fsync(fd)
    copied = zip(group, written, seen)
    return results + fc.unlink_many([(c[0], *s[:4], c[1], c[2], w[2]) for c, w, s in copied if w])
"""
    + _FLOOR
    + """
for d in reversed(dirs):
    os.rmdir(d)
"""
)
#: The big-file cases by mode: (case name, files, bytes each); each set generated once.
BIG_SETS = {
    "full": [("big-4x128MiB", 4, 128 * 2**20), ("big-4x1GiB", 4, 2**30)],
    "quick": [("big-4x16MiB", 4, 16 * 2**20), ("big-4x64MiB", 4, 64 * 2**20)],
    "tiny": [("big-4x1MiB", 4, 2**20)],
}
#: Real files for the duplicates case, by mode: each is copied twice into the scratch tree.
DUPES_SOURCES = {
    "full": ["/usr/share/doc", "/usr/lib/python3"],
    "quick": ["/usr/share/doc"],
}


def _env() -> dict[str, str]:
    paths = [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]
    return {"PYTHONPATH": os.pathsep.join(paths)}


class _Calls:
    """Contenders as processes, each call with a fresh destination and store."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self.env = _env()

    def store(self) -> tuple[str, Path]:
        path = fresh_dir(self.session.scratch, "store") / "jobs.sqlite"
        return str(path), path.parent

    def parjobs(self, *args: str) -> Callable[[], Timing]:
        """``parjobs ARGS`` with a fresh store."""

        def call() -> Timing:
            store, where = self.store()
            try:
                return run_tool([*PARJOBS, "--store", store, *args], env=self.env)
            finally:
                remove(where)

        return call

    def tool(self, *argv: str) -> Callable[[], Timing]:
        return lambda: run_tool(list(argv), env=self.env)

    def copy_into(
        self,
        make: Callable[[Path], list[str]],
        expect: tuple[int, int],
        who: str,
        before: Callable[[], object] | None = None,
    ) -> Callable[[], Timing]:
        """``make(dst)`` is the command that copies into the fresh, existing ``dst``;
        ``before()``, if given, runs just before it (untimed)."""

        def call() -> Timing:
            dst = fresh_dir(self.session.scratch, "dst")
            store, where = self.store()
            argv = [store if a == "{store}" else a for a in make(dst)]
            try:
                if before is not None:
                    before()
                timing = run_tool(argv, env=self.env)
                expect_tree(dst, *expect, who)
                return timing
            finally:
                remove(dst)
                remove(where)

        return call


def _startup(calls: _Calls) -> tuple[dict[str, Callable[[], Timing]], str]:
    one = fresh_dir(calls.session.scratch, "one")
    (one / "note.txt").write_bytes(b"x" * 1000)
    out = {
        "python -c 'import trio'": calls.tool(sys.executable, "-c", "import trio"),
        "parjobs --help": calls.tool(*PARJOBS, "--help"),
        "parjobs jobs": calls.parjobs("jobs"),
        "parjobs copy (1 file)": calls.copy_into(
            lambda dst: [*PARJOBS, "--store", "{store}", "copy", str(one / "note.txt"), str(dst)],
            (1, 1000),
            "parjobs copy (1 file)",
        ),
    }
    return out, "python -c 'import trio'"


def _floor_fits(src: Path) -> bool:
    """Whether the floors' C group calls copy every file under ``src`` (none is larger than
    `FLOOR_MAX_SIZE`): the small-file floor of a tree of big files would fail."""
    return all(
        os.lstat(os.path.join(top, name)).st_size <= FLOOR_MAX_SIZE
        for top, _, names in os.walk(src)
        for name in names
    )


def _copies(calls: _Calls, src: Path, verify: bool) -> dict[str, Callable[[], Timing]]:
    """``cp -r`` against ``parjobs copy`` (and ``--verify``) of ``src``, and the small-file
    floor (`SMALL_FLOOR`) where it applies (the ``large`` case's files are too big for it)."""
    expect = tree_stats(src)
    out = {"cp -r": calls.copy_into(lambda dst: ["cp", "-r", str(src), f"{dst}/"], expect, "cp")}
    if _floor_fits(src):
        out[SMALL_FLOOR_NAME] = calls.copy_into(
            lambda dst: [sys.executable, "-c", SMALL_FLOOR, str(src), str(dst), str(OPS)],
            expect,
            SMALL_FLOOR_NAME,
        )
    for extra in ([], ["--verify"]) if verify else ([],):
        name = " ".join(["parjobs copy", *extra])
        out[name] = calls.copy_into(
            lambda dst, extra=extra: [
                *PARJOBS, "--store", "{store}", "copy", *extra, str(src), str(dst)
            ],
            expect,
            name,
        )  # fmt: skip
    return out


def _big_copies(calls: _Calls, src: Path, cold: bool) -> dict[str, Callable[[], Timing]]:
    """``cp -r`` against ``parjobs copy`` of ``src``, and the floor (`COPY_FLOOR`)."""
    expect = tree_stats(src)
    argvs = {
        "cp -r": lambda dst: ["cp", "-r", str(src), f"{dst}/"],
        "parjobs copy": lambda dst: [*PARJOBS, "--store", "{store}", "copy", str(src), str(dst)],
        "floor: python, import trio, 2 threads": lambda dst: [
            sys.executable, "-c", COPY_FLOOR, str(src), str(dst)
        ],
    }  # fmt: skip
    before = drop_caches if cold else os.sync
    return {name: calls.copy_into(make, expect, name, before) for name, make in argvs.items()}


def _moves(calls: _Calls, src: Path) -> dict[str, Callable[[], Timing]]:
    """Moves from a fresh copy of ``src`` on the data's disk into a fresh tmpfs directory.

    The copy is written back (``sync``, untimed) before the call: a source just written is
    still only in the page cache (ext4 has not even allocated its blocks), and unlinking it
    is cheap: the floor's 3,000 unlinks took 38 ms in all, against 690 ms for files at rest,
    whose blocks the unlink must free through the journal. Without the sync each call met
    whatever state the kernel's write-back had reached (it starts on its own at the dirty
    thresholds): either, or the write-back running beside it."""
    expect = tree_stats(src)

    def move(name: str, make: Callable[[Path, Path, str], list[str]]) -> Callable[[], Timing]:
        def call() -> Timing:
            staged = fresh_dir(calls.session.scratch, "move-src")
            shutil.copytree(src, staged / src.name)
            os.sync()  # at rest, as files to be moved are (see above)
            dst = fresh_dir(TMPFS, "parjobs-bench-move")
            store, where = calls.store()
            try:
                timing = run_tool(make(staged / src.name, dst, store), env=calls.env)
                expect_tree(dst, *expect, name)
                return timing
            finally:
                for path in (staged, dst, where):
                    remove(path)

        return call

    return {
        "mv": move("mv", lambda s, d, _: ["mv", str(s), f"{d}/"]),
        MOVE_FLOOR_NAME: move(
            MOVE_FLOOR_NAME,
            lambda s, d, _: [sys.executable, "-c", MOVE_FLOOR, str(s), str(d), str(OPS)],
        ),
        "parjobs move": move(
            "parjobs move", lambda s, d, st: [*PARJOBS, "--store", st, "move", str(s), str(d)]
        ),
        "parjobs move --no-verify": move(
            "parjobs move --no-verify",
            lambda s, d, st: [*PARJOBS, "--store", st, "move", "--no-verify", str(s), str(d)],
        ),
    }


def _move_set(session: Session, small: Path) -> tuple[Path, dict[str, Any]]:
    """The first directories of the small set holding `MOVE_FILES` files (a copy in the
    scratch dir), or the whole set when it is smaller: moved by ``move-tmpfs``, copied by
    ``small-3k``."""
    dirs = sorted(p for p in small.iterdir() if p.is_dir())
    if sum(1 for d in dirs for _ in d.iterdir()) <= MOVE_FILES:
        return small, session.data.describe("small")
    root = fresh_dir(session.scratch, "move-set") / small.name
    root.mkdir()
    files = taken = 0
    for d in dirs:
        if files >= MOVE_FILES:
            break
        shutil.copytree(d, root / d.name)
        files += sum(1 for _ in d.iterdir())
        taken += 1
    count, size = tree_stats(root)
    label = (
        f"{count:,} files of 1-64 KiB ({size / 1e6:,.0f} MB): the small set's first {taken} dirs"
    )
    return root, {"label": label, "files": count, "bytes": size}


def _halves(session: Session, files: list[Path]) -> list[Path]:
    """The same bytes as ``files`` split into twice as many files, in the scratch dir."""
    out = []
    where = fresh_dir(session.scratch, "halves")
    for path in files:
        size = path.stat().st_size
        with open(path, "rb") as f:
            for k, part in enumerate((size // 2, size - size // 2)):
                target = where / f"{path.stem}-{k}{path.suffix}"
                target.write_bytes(f.read(part))
                out.append(target)
    return out


def _dupes_tree(session: Session) -> tuple[Path, str]:
    """Two copies of the mode's real files (or of the small set) under the scratch dir."""
    sources = [Path(p) for p in DUPES_SOURCES.get(session.mode, []) if os.path.isdir(p)]
    if not sources:
        sources = [session.data.path("small")]
    tree = fresh_dir(session.scratch, "dupes")
    for copy in ("a", "b"):
        for source in sources:
            shutil.copytree(source, tree / copy / source.name, symlinks=True)
    files, size = tree_stats(tree)
    label = f"2 copies of {' + '.join(map(str, sources))}: {files:,} files, {size / 1e6:,.0f} MB"
    return tree, label


def _hashes(calls: _Calls, paths: list[Path]) -> dict[str, Callable[[], Timing]]:
    """``xxhsum -H2`` against ``parjobs hash`` of the files' directory, and the floor."""
    files = [str(f) for f in paths]
    where = str(paths[0].parent)
    return {
        "xxhsum -H2": calls.tool("xxhsum", "-H2", *files),
        "parjobs hash": calls.parjobs("hash", where),
        "parjobs hash -w 2": calls.parjobs("hash", "-w", "2", where),
        "floor: python, import trio, 2 threads": calls.tool(
            sys.executable, "-c", HASH_FLOOR, *files
        ),
    }


#: Photos of the thumbnails case, the size and quality every contender makes.
THUMB_PHOTOS, THUMB_SIZE, THUMB_QUALITY = 60, 256, 80


def _thumbnails(calls: _Calls, photos: list[Path]) -> dict[str, Callable[[], Timing]]:
    """``parjobs thumbnails`` against ``vipsthumbnail``, one process and two at a time, each
    call into a fresh output directory that must then hold one thumbnail per photo."""
    vips = ["vipsthumbnail", "-s", str(THUMB_SIZE)]
    half = (len(photos) + 1) // 2

    def made(make: Callable[[Path], list[str]], who: str) -> Callable[[], Timing]:
        def call() -> Timing:
            out = fresh_dir(calls.session.scratch, "thumbs")
            store, where = calls.store()
            argv = [store if a == "{store}" else a for a in make(out)]
            try:
                timing = run_tool(argv, env=calls.env)
                got = sum(1 for _ in out.rglob("*.webp"))
                if got != len(photos):
                    raise RuntimeError(f"{who}: made {got} thumbnails, expected {len(photos)}")
                return timing
            finally:
                remove(out)
                remove(where)

        return call

    def vips_into(out: Path, files: list[Path]) -> str:
        into = f"{out}/%s.webp[Q={THUMB_QUALITY}]"
        return shlex.join([*vips, "-o", into, *map(str, files)])

    return {
        "vipsthumbnail, 2 at a time": made(
            lambda out: [
                "sh",
                "-c",
                f"{vips_into(out, photos[:half])} & {vips_into(out, photos[half:])}; wait $!"
                " && wait",
            ],
            "vipsthumbnail, 2 at a time",
        ),
        "vipsthumbnail": made(lambda out: ["sh", "-c", vips_into(out, photos)], "vipsthumbnail"),
        "parjobs thumbnails": made(
            lambda out: [
                *PARJOBS,
                "--store",
                "{store}",
                "thumbnails",
                "--size",
                str(THUMB_SIZE),
                "--quality",
                str(THUMB_QUALITY),
                "--out",
                str(out),
                *map(str, photos),
            ],
            "parjobs thumbnails",
        ),
    }


def _case(
    session: Session,
    name: str,
    contenders: dict[str, Callable[[], Timing]],
    baseline: str,
    data_set: dict[str, Any],
    cache: str = CACHED,
    **extra: Any,
) -> dict[str, Any]:
    label = data_set.get("label") or "; ".join(v.get("label", k) for k, v in data_set.items())
    log(f"[cli] {name}: {label}, {cache}, {session.rounds} rounds")
    load0 = load_average()
    warmup = session.warmup if cache == CACHED else 0  # a warm-up round warms nothing cold
    rounds = run_rounds(contenders, session.rounds, warmup)
    return session.case(
        rounds,
        baseline,
        data_set=data_set,
        cache=cache,
        loadavg_before=load0,
        warmup_rounds=warmup,
        **extra,
    )


def run(session: Session) -> dict[str, Any]:
    compileall.compile_dir(str(ROOT / "parjobs"), quiet=1)  # as pip install does
    data = session.data
    calls = _Calls(session)
    tools = describe_tools(
        [
            ("cp", ["cp", "--version"]),
            ("mv", ["mv", "--version"]),
            ("xxhsum", ["xxhsum", "--version"]),
            ("jdupes", ["jdupes", "--version"]),
            ("fdupes", ["fdupes", "--version"]),
        ]
    )
    out: dict[str, Any] = {
        "what": "the parjobs command line end to end, against the usual tools",
        "timed": "each process from start to exit (stdout a pipe); fresh destination and "
        "store per call, not timed",
        "tools": tools,
        "cases": {},
        "skipped_cases": {},
    }
    cases, skipped = out["cases"], out["skipped_cases"]

    wants = session.wants
    if wants("startup"):
        startup, base = _startup(calls)
        cases["startup"] = _case(session, "startup", startup, base, {"label": "one 1000-byte file"})

    small, large = data.path("small"), data.path("large")
    if wants("small") or wants("small-3k") or wants("large"):
        warm([small, large])
    if wants("small"):
        cases["small"] = _case(
            session, "small", _copies(calls, small, verify=True), "cp -r", data.describe("small")
        )
    if wants("small-3k"):
        subset, subset_set = _move_set(session, small)
        try:
            copies = _copies(calls, subset, verify=False)
            cases["small-3k"] = _case(session, "small-3k", copies, "cp -r", subset_set)
        finally:
            if subset != small:
                remove(subset.parent)
    if wants("large"):
        cases["large"] = _case(
            session, "large", _copies(calls, large, verify=False), "cp -r", data.describe("large")
        )

    for name, count, size in BIG_SETS[session.mode]:
        if not wants(name):
            continue
        src, info = blobs(data, count, size)
        for cache in session.cache_states:
            if cache == CACHED:
                warm([src])
            key = name if cache == CACHED else f"{name}/{cache}"
            copies = _big_copies(calls, src, cold=cache != CACHED)
            cases[key] = _case(session, key, copies, "cp -r", info, cache)

    if wants("move-tmpfs"):
        if TMPFS.is_dir() and os.access(TMPFS, os.W_OK):
            moved, moved_set = _move_set(session, small)
            try:
                cases["move-tmpfs"] = _case(
                    session, "move-tmpfs", _moves(calls, moved), "mv", moved_set
                )
            finally:
                if moved != small:
                    remove(moved.parent)
        else:
            skipped["move-tmpfs"] = f"{TMPFS} is not a writable directory"

    if wants("hash"):
        if which("xxhsum"):
            halves = _halves(session, data.files("large"))
            try:
                for name, paths, label in (
                    ("hash", data.files("large"), data.describe("large")),
                    ("hash-halves", halves, {"label": f"the large set as {len(halves)} files"}),
                ):
                    warm(paths)
                    cases[name] = _case(session, name, _hashes(calls, paths), "xxhsum -H2", label)
            finally:
                remove(halves[0].parent)
        else:
            skipped["hash"] = "xxhsum is not installed (apt-get install xxhash)"

    if wants("thumbnails"):
        if which("vipsthumbnail"):
            photos = data.files("photos")[:THUMB_PHOTOS]
            warm(photos)
            photo_set = {"label": f"the first {len(photos)} of the {data.label('photos')}"}
            cases["thumbnails"] = _case(
                session,
                "thumbnails",
                _thumbnails(calls, photos),
                "vipsthumbnail, 2 at a time",
                photo_set,
            )
        else:
            skipped["thumbnails"] = "vipsthumbnail is not installed (apt-get install libvips-tools)"

    if wants("dupes"):
        if which("jdupes"):
            tree, label = _dupes_tree(session)
            try:
                warm([tree])
                dupes = {
                    "jdupes -rq": calls.tool("jdupes", "-rq", str(tree)),
                    "parjobs dupes": calls.parjobs("dupes", str(tree)),
                    "floor: python, import trio, C scan, 2 threads": calls.tool(
                        sys.executable, "-c", DUPES_FLOOR, str(tree)
                    ),
                }
                if which("fdupes"):
                    dupes["fdupes -rq"] = calls.tool("fdupes", "-rq", str(tree))
                cases["dupes"] = _case(session, "dupes", dupes, "jdupes -rq", {"label": label})
            finally:
                remove(tree)
        else:
            skipped["dupes"] = "jdupes is not installed (apt-get install jdupes)"
    return out
