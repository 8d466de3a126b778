"""hash, delete, dupes, thumbnails and the demo from the command line."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import xxhash
from _cli import CLI, run

# -- the other operations ------------------------------------------------------------------


def test_hash_prints_digests_on_stdout(small: Path, env, store) -> None:
    proc = run("hash", str(small), env=env, store=store)
    assert proc.returncode == 0
    lines = proc.stdout.splitlines()
    assert len(lines) == 12 and "completed" in proc.stderr
    digest, path = lines[0].split("  ", 1)
    assert digest == xxhash.xxh3_128_hexdigest(Path(path).read_bytes())
    as_json = run("--json", "hash", str(small), env=env, store=store)
    result = json.loads(as_json.stdout.splitlines()[-1])["result"]
    assert result["digests"] == {p: d for d, p in (line.split("  ", 1) for line in lines)}
    shown = json.loads(
        run(
            "show",
            json.loads(as_json.stdout.splitlines()[0])["job_id"],
            "--json",
            env=env,
            store=store,
        ).stdout
    )
    assert "digests" not in shown["result"], "the store keeps them in the item log only"


def test_delete_dupes_thumbnails(tmp_path: Path, env, store) -> None:
    from PIL import Image

    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(3):
        Image.new("RGB", (300, 200), (i * 80, 100, 200)).save(photos / f"p{i}.jpg")
    (photos / "copy.jpg").write_bytes((photos / "p0.jpg").read_bytes())
    dupes = run("dupes", str(photos), env=env, store=store)
    assert dupes.returncode == 0
    assert {str(photos / "p0.jpg"), str(photos / "copy.jpg")} <= set(dupes.stdout.splitlines())
    thumbs = run(
        "thumbnails",
        str(photos),
        "--size",
        "64",
        "--out",
        str(tmp_path / "t"),
        env=env,
        store=store,
    )
    assert thumbs.returncode == 0, thumbs.stdout + thumbs.stderr
    assert len(list((tmp_path / "t").rglob("*.webp"))) == 3  # the copy shares its thumbnail
    trashed = run("delete", "--trash", str(photos / "copy.jpg"), env=env, store=store)
    assert trashed.returncode == 0 and not (photos / "copy.jpg").exists()
    assert (tmp_path / "data" / "Trash" / "files" / "copy.jpg").exists()
    gone = run("delete", str(photos), env=env, store=store)
    assert gone.returncode == 0 and not photos.exists()


def test_demo_runs(tmp_path: Path, env) -> None:
    proc = subprocess.run(
        [*CLI, "demo", "--dir", str(tmp_path / "demo")],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "the copy is identical" in proc.stdout and "paused" in proc.stdout
    assert list((tmp_path / "demo" / "thumbnails").rglob("*.webp"))
    assert (tmp_path / "demo" / "jobs.sqlite").exists()
    assert not (tmp_path / "state").exists()  # its own store, not the default one
