"""A full disk while records are written: one line naming the path and how to resume, exit 1, and
the rerun (after space is freed) resumes to the same records as a clean run.

No size-limited filesystem can be mounted here without root, so the kernel's ENOSPC is injected at
the fsync of samples.jsonl after a few records (the data written before it stays on disk, as on a
real full disk)."""

from __future__ import annotations

import errno
import os

from click.testing import CliRunner

from resadapt_eval.cli import main
from resadapt_eval.pipeline import store as rec

N = 6


def _args(out):
    return ["run", "--task", "probe-videoqa", "--budget", "0.25", "--limit", str(N), "--out", str(out),
            "--no-progress"]


def test_a_full_disk_exits_1_with_one_line_and_the_rerun_resumes(tmp_path, monkeypatch):
    clean = CliRunner().invoke(main, _args(tmp_path / "clean"))
    assert clean.exit_code == 0, clean.output
    run_dir = "probe-videoqa/tiny-bundled/uniform-scale/b0.25-f8"
    expected = rec.read_records(tmp_path / "clean" / run_dir / rec.SAMPLES)
    assert len(expected) == N

    target = tmp_path / "full" / run_dir / rec.SAMPLES
    real_fsync, calls = os.fsync, []

    def fsync(fd):  # the disk fills up at the fourth record
        if os.path.realpath(f"/proc/self/fd/{fd}") == str(target.resolve()):
            calls.append(fd)
            if len(calls) >= 4:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    full = CliRunner().invoke(main, _args(tmp_path / "full"))
    monkeypatch.setattr(os, "fsync", real_fsync)
    assert full.exit_code == 1, full.output
    lines = [ln for ln in full.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, full.stderr
    assert str(target) in lines[0] and "no space left" in lines[0] and "rerun the same command" in lines[0]
    assert not (tmp_path / "full" / run_dir / rec.SUMMARY).exists()
    kept = rec.read_records(target)
    assert len(kept) >= 3  # what was written before the disk filled up is still there

    again = CliRunner().invoke(main, _args(tmp_path / "full"))
    assert again.exit_code == 0, again.output
    resumed = rec.read_records(target)
    assert len(resumed) == N and len({r["id"] for r in resumed}) == N

    def comparable(records):
        return sorted(({k: v for k, v in r.items() if k not in ("timings",)} for r in records), key=lambda r: r["id"])

    assert comparable(resumed) == comparable(expected)


def test_write_json_on_a_full_disk_leaves_no_temp_file(tmp_path, monkeypatch):
    from pathlib import Path

    from resadapt_eval.core.types import DiskFull

    def write_text(self, *a, **k):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(Path, "write_text", write_text)
    try:
        rec.write_json(tmp_path / "summary.json", {"a": 1})
    except DiskFull as e:
        assert str(tmp_path / "summary.json") in str(e)
    else:
        raise AssertionError("no DiskFull")
    assert list(tmp_path.iterdir()) == []
