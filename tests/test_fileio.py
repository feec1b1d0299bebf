"""Atomic writes: the file appears whole, with a plain file's permissions; failures leave
nothing behind and keep the previous file."""

from __future__ import annotations

import os
import stat

import pytest

from mask2anomaly.fileio import atomic_path, save_npy_atomic, write_text_atomic


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_written_files_get_the_umask_permissions_not_mkstemps_private_ones(tmp_path):
    old = os.umask(0o022)
    try:
        write_text_atomic(tmp_path / "report.md", "x")
        import numpy as np

        save_npy_atomic(tmp_path / "map.npy", np.zeros(3))
    finally:
        os.umask(old)
    assert _mode(tmp_path / "report.md") == 0o644
    assert _mode(tmp_path / "map.npy") == 0o644


def test_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "results.json"
    write_text_atomic(target, "old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as temporary:
            temporary.write_text("half")
            raise RuntimeError("interrupted")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]
