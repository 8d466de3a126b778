"""Paths as the user typed them: delete's refusals, symlinked parents, hash to a link."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import xxhash
from _cli import digests, one_error_line, run
from _forkcli import run as forked_run

# -- delete: what the user typed ------------------------------------------------------------


@pytest.fixture
def nest(tmp_path: Path) -> Path:
    """tmp_path/area/top/mid/low with a file at each level; HOME is tmp_path/area/home."""
    low = tmp_path / "area" / "top" / "mid" / "low"
    low.mkdir(parents=True)
    (tmp_path / "area" / "home").mkdir()
    for d in (low.parent.parent, low.parent, low):
        (d / "keep.txt").write_bytes(os.urandom(50))
    return low


def run_in(cwd: Path, *args: str, env: dict[str, str], store: str):
    """The CLI run as a subprocess in ``cwd``, with HOME inside tmp_path (see `nest`)."""
    home = str(cwd).split("/area/")[0] + "/area/home"
    return forked_run([*args, "--store", store], env={**env, "HOME": home}, cwd=cwd)


@pytest.mark.parametrize("trash", [False, True])
@pytest.mark.parametrize("typed", [".", "..", "./", "../", "mid/..", "x/.", "../.", ".//", ""])
def test_delete_refuses_dot_and_dot_dot_as_typed_nothing_deleted(
    nest: Path, tmp_path: Path, env, store, typed: str, trash: bool
) -> None:
    (nest / "x").mkdir()
    area = tmp_path / "area"
    before = digests(area)
    cwd = nest if typed != "mid/.." else nest.parent.parent
    args = ["delete", *(["--trash"] if trash else []), typed]
    line = one_error_line(run_in(cwd, *args, env=env, store=store))
    assert "name the directory itself" in line or "an empty path" in line, line
    assert digests(area) == before
    assert not (tmp_path / "data" / "Trash").exists()


@pytest.mark.parametrize("typed", ["{top}", "{mid}/", "../../mid", "{low}", "../low", "../../.."])
def test_delete_refuses_the_current_directory_and_its_ancestors_unless_forced(
    nest: Path, tmp_path: Path, env, store, typed: str
) -> None:
    area = tmp_path / "area"
    before = digests(area)
    names = {"top": nest.parent.parent, "mid": nest.parent, "low": nest}
    path = typed.format(**names)
    if typed == "../../..":  # ends in '..': refused even with --force-ancestor
        proc = run_in(nest, "delete", "--force-ancestor", path, env=env, store=store)
        line = one_error_line(proc)
        assert "'.' or '..'" in line
        assert digests(area) == before
        return
    line = one_error_line(run_in(nest, "delete", path, env=env, store=store))
    assert "current directory" in line and "--force-ancestor" in line, line
    assert digests(area) == before
    forced = run_in(nest, "delete", "--force-ancestor", path, env=env, store=store)
    assert forced.returncode == 0, forced.stderr
    gone = names[typed.strip("{}/").rsplit("/", 1)[-1]]
    assert not gone.exists() and area.is_dir() and (area / "home").is_dir()


@pytest.mark.parametrize("typed", ["~", "~/", "{area}", "{home}"])
def test_delete_refuses_home_and_its_ancestors_even_when_forced(
    nest: Path, tmp_path: Path, env, store, typed: str
) -> None:
    area = tmp_path / "area"
    before = digests(area)
    path = typed.format(area=area, home=area / "home")
    for extra in ([], ["--force-ancestor"], ["--trash", "--force-ancestor"]):
        line = one_error_line(run_in(nest, "delete", *extra, path, env=env, store=store))
        assert "home directory" in line, line
        assert digests(area) == before


def test_delete_resolves_a_symlinked_parent_as_the_kernel_does(
    nest: Path, tmp_path: Path, env, store
) -> None:
    """``link/../x`` is x next to the link's target, not x in the current directory."""
    other = tmp_path / "area" / "other"
    (other / "sub").mkdir(parents=True)
    (other / "x").write_bytes(b"the x named")
    (nest / "x").write_bytes(b"an unrelated x")
    os.symlink(other / "sub", nest / "link")
    proc = run_in(nest, "delete", "link/../x", env=env, store=store)
    assert proc.returncode == 0, proc.stderr
    assert not (other / "x").exists()
    assert (nest / "x").read_bytes() == b"an unrelated x"


@pytest.mark.parametrize("command", ["move", "copy"])
def test_move_and_copy_resolve_a_symlinked_parent_as_the_kernel_does(
    nest: Path, tmp_path: Path, env, store, command: str
) -> None:
    """``link/../x`` is x next to the link's target, as for delete, ``mv`` and ``cp``: a
    move or copy took the x in the current directory (``abspath``), another file."""
    other = tmp_path / "area" / "other"
    (other / "sub").mkdir(parents=True)
    (other / "x").write_bytes(b"the x named")
    (nest / "x").write_bytes(b"an unrelated x")
    os.symlink(other / "sub", nest / "link")
    dst = tmp_path / "area" / "dst"
    dst.mkdir()
    proc = run_in(nest, command, "link/../x", str(dst), env=env, store=store)
    assert proc.returncode == 0, proc.stderr
    assert (dst / "x").read_bytes() == b"the x named"
    assert (nest / "x").read_bytes() == b"an unrelated x"
    assert (other / "x").exists() == (command == "copy")


@pytest.mark.parametrize("typed", [".", "..", "./", "../", "../low/.", "../../mid/.."])
def test_move_refuses_dot_and_dot_dot_as_typed_nothing_moved(
    nest: Path, tmp_path: Path, env, store, typed: str
) -> None:
    """As ``mv`` (the kernel refuses to rename them): made absolute, ``.`` or ``x/..``
    named the current directory or an ancestor of it, which the move took."""
    area = tmp_path / "area"
    dst = tmp_path / "dst"
    dst.mkdir()
    before = digests(area)
    line = one_error_line(run_in(nest, "move", typed, str(dst), env=env, store=store))
    assert "'.' or '..'" in line, line
    assert digests(area) == before
    assert not any(dst.iterdir())


def test_hash_output_to_a_link_to_stdout_writes_the_pipe_not_the_link(
    small: Path, tmp_path: Path, env, store
) -> None:
    """``--output /dev/stdout``, with a stand-in link (a regression must not replace the
    machine's /dev/stdout): the digests go down the pipe, the display to stderr, and the
    link stays a link."""
    link = tmp_path / "stdout"
    os.symlink("/proc/self/fd/1", link)
    proc = run("hash", str(small), "--output", str(link), env=env, store=store)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert len(lines) == 12, proc.stdout  # the digests only: no progress in the data
    for line in lines:
        digest, path = line.split("  ", 1)
        assert digest == xxhash.xxh3_128_hexdigest(Path(path).read_bytes())
    assert os.readlink(link) == "/proc/self/fd/1"
    assert "completed" in proc.stderr


# -- x/. and x/..: what the directory holds --------------------------------------------------


def _area(root: Path) -> None:
    """x (a file, a subdirectory), a symlink lx to it, a destination D holding a file of
    its own and one of x's names (a conflict, settled by the copy's policy), and a file."""
    (root / "x" / "sub").mkdir(parents=True)
    (root / "x" / "f").write_bytes(b"x's f")
    (root / "x" / "sub" / "g").write_bytes(b"x's g")
    (root / "D").mkdir()
    (root / "D" / "keep").write_bytes(b"D's own")
    (root / "D" / "f").write_bytes(b"D's f")
    os.symlink("x", root / "lx")
    os.symlink("D", root / "lD")
    (root / "file").write_bytes(b"a file")


@pytest.mark.parametrize(
    ("cwd", "typed", "dest"),
    [
        ("", "x/.", "D"),
        ("", "x/./", "N"),
        ("", "x/sub/..", "D"),
        ("", "lx/.", "N"),
        ("x", ".", "../D"),
        ("x/sub", "..", "../../N"),
        ("", "x", "D/."),
        ("", "x/.", "lD"),
        ("", "x/.", "lD/"),
        ("", "x/.", "lD/."),
    ],
)
def test_copy_of_dot_copies_what_the_directory_holds_as_cp_does(
    tmp_path: Path, env, store, cwd: str, typed: str, dest: str
) -> None:
    """``cp -a x/. D`` copies what x holds into D (made if missing), the classic "copy
    this folder's contents" idiom; ``parjobs copy x/. D`` made D/x, and ``copy . D`` made
    D/<the current directory's name>. Both trees, one copied by ``cp -a``, the other by
    parjobs (its default policy: D's own f kept, x's f failed), end the same."""
    ours, theirs = tmp_path / "ours", tmp_path / "theirs"
    for root in (ours, theirs):
        _area(root)
    cp = subprocess.run(["cp", "-a", "-n", typed, dest], cwd=theirs / cwd, capture_output=True)
    assert cp.returncode == 0, cp.stderr
    proc = forked_run(["copy", typed, dest, "--store", store], env=env, cwd=ours / cwd)
    assert proc.returncode in (0, 1), proc.stderr  # 1: D's f is in the way (not replaced)
    assert digests(ours) == digests(theirs)


@pytest.mark.parametrize("dest", ["lD", "lD/", "lD/."])
def test_copy_of_dot_to_a_link_to_a_directory_merges_into_it_keeping_the_link(
    tmp_path: Path, env, store, dest: str
) -> None:
    """``cp -a x/. lD`` (lD a symlink to the directory D) merges what x holds into D, as
    for ``cp -a x lD`` (which makes D/x). ``parjobs copy x/. lD`` (ac378ae) took lD as
    the directory to make: the link was in the way of every item ("not a directory"), and
    with ``--on-conflict overwrite`` it was deleted and a directory made in its place."""
    ours, theirs = tmp_path / "ours", tmp_path / "theirs"
    for root in (ours, theirs):
        _area(root)
    cp = subprocess.run(["cp", "-a", "x/.", dest], cwd=theirs, capture_output=True)
    assert cp.returncode == 0, cp.stderr
    args = ["copy", "x/.", dest, "--on-conflict", "overwrite", "--store", store]
    proc = forked_run(args, env=env, cwd=ours)
    assert proc.returncode == 0, proc.stderr
    assert os.readlink(ours / "lD") == "D"
    assert digests(ours) == digests(theirs)


@pytest.mark.parametrize(
    ("typed", "why"),
    [
        (["x/.", "lx", "D"], "only source"),  # (cp merges x into D and makes D/lx)
        (["file/.", "D"], "trailing '/.' names one"),
        (["x", "M/."], "No such file or directory"),
        (["x", "file/."], "Not a directory"),
    ],
)
def test_copy_refuses_what_it_cannot_take_as_cp_does_nothing_copied(
    tmp_path: Path, env, store, typed: list[str], why: str
) -> None:
    """A source ending in ``/.`` beside others (parjobs takes it as the only source of a
    job), a file written ``file/.`` and a destination ``M/.`` that is no directory: refused
    before anything is copied."""
    area = tmp_path / "files"
    _area(area)
    before = digests(area)
    line = one_error_line(forked_run(["copy", *typed, "--store", store], env=env, cwd=area))
    assert why in line, line
    assert digests(area) == before


@pytest.mark.parametrize(
    "args",
    [["delete", "~/old"], ["delete", "--trash", "~/old"], ["move", "~/old", "dst"], ["hash", "~"]],
)
def test_a_tilde_that_also_exists_here_is_refused_as_ambiguous(
    nest: Path, tmp_path: Path, env, store, args: list[str]
) -> None:
    """A quoted ``'~/old'`` (or one from a variable) reaches parjobs as typed, where ``rm``,
    ``mv`` take ``./~/old``: parjobs expanded it and deleted ``$HOME/old``, another tree. When
    a ``~`` exists here, it is refused (nothing touched); without one it is still expanded."""
    home = tmp_path / "area" / "home"
    (home / "old").mkdir()
    (home / "old" / "keep").write_bytes(b"precious")
    (nest / "~" / "old").mkdir(parents=True)
    (nest / "~" / "old" / "junk").write_bytes(b"junk")
    (nest / "dst").mkdir()
    area = tmp_path / "area"
    before = digests(area)
    line = one_error_line(run_in(nest, *args, env=env, store=store))
    assert "ambiguous" in line and "'./~" in line, line
    assert digests(area) == before
    proc = run_in(nest.parent, "delete", "~/old", env=env, store=store)  # (no ~ there)
    assert proc.returncode == 0, proc.stderr
    assert not (home / "old").exists() and (nest / "~" / "old" / "junk").exists()
