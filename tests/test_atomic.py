"""mof.atomic: what every writer of a finished folder or file relies on (encoders, exports, data sets, mining
shards): a block that fails leaves the old one and nothing beside it; one that ends puts the new one in place."""

import os
import subprocess

import pytest

from mof.atomic import replaced_folder, write_file


def _beside(folder):
    return sorted(p.name for p in folder.parent.iterdir() if p.name != folder.name)


def test_a_folder_is_replaced_only_by_a_whole_one(tmp_path):
    out = tmp_path / "set"
    out.mkdir()
    (out / "old.txt").write_text("before")
    with pytest.raises(RuntimeError):
        with replaced_folder(out) as d:
            (d / "new.txt").write_text("half")
            raise RuntimeError("killed halfway")
    assert sorted(p.name for p in out.iterdir()) == ["old.txt"] and _beside(out) == []
    with replaced_folder(out) as d:
        assert d != out and d.parent == out.parent and not any(d.iterdir())
        (d / "new.txt").write_text("whole")
        assert (out / "old.txt").exists()      # still the old one while the new one is written
    assert sorted(p.name for p in out.iterdir()) == ["new.txt"] and _beside(out) == []
    with replaced_folder(tmp_path / "fresh" / "deeper") as d:   # no folder there before
        (d / "x").write_text("1")
    assert (tmp_path / "fresh" / "deeper" / "x").read_text() == "1"


def test_folders_left_by_killed_processes_are_removed_and_a_running_ones_kept(tmp_path):
    out = tmp_path / "encoder"
    dead = subprocess.Popen(["true"])
    dead.wait()
    left = tmp_path / f".encoder.partial-{dead.pid}"
    running = tmp_path / f".encoder.partial-{os.getppid()}"
    for d in (left, running):
        d.mkdir()
    with replaced_folder(out) as d:
        (d / "w").write_text("1")
    assert not left.exists() and running.exists()


def test_a_file_is_replaced_only_by_a_whole_one(tmp_path):
    path = tmp_path / "shard.json"
    path.write_bytes(b"before")

    def dies(f):
        f.write(b"half")
        raise OSError("disk full")

    with pytest.raises(OSError):
        write_file(path, dies)
    assert path.read_bytes() == b"before" and [p.name for p in tmp_path.iterdir()] == ["shard.json"]
    write_file(path, lambda f: f.write(b"after"))
    assert path.read_bytes() == b"after" and [p.name for p in tmp_path.iterdir()] == ["shard.json"]
