"""Atomic file writes and strict-JSON conversion, shared by every writer in the package.

Anything a long run produces (checkpoints, score maps, reports, datasets) is written to a
temporary file in the target folder and renamed over the target, so an interrupted run never
leaves a half-written file behind.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np


@contextmanager
def atomic_path(path: str | Path, suffix: str = ".tmp") -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success rename it to `path`, else delete it.

    `suffix` lets writers that pick a format from the file name (PIL, video encoders) see the
    right extension.
    """
    path = Path(path)
    temporary = temporary_beside(path, suffix)
    try:
        yield temporary
        publish(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def temporary_beside(path: Path, suffix: str = ".tmp") -> Path:
    """A new empty file in `path`'s folder (created if needed), to be `publish`ed as `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)
    os.close(handle)
    return Path(name)


def publish(temporary: Path, path: Path) -> None:
    """Rename a finished temporary file to `path`, with the permissions a plain open() would
    give it (mkstemp creates files readable by their owner only)."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(temporary, 0o666 & ~umask)
    os.replace(temporary, path)


def write_text_atomic(path: str | Path, text: str) -> None:
    with atomic_path(path) as temporary:
        temporary.write_text(text)


def json_safe(value: Any) -> Any:
    """Plain JSON values: NaN / inf -> None, numpy scalars -> Python, tuples -> lists."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, (np.floating, float)):
        return None if not math.isfinite(value) else float(value)
    return value


def write_json_atomic(path: str | Path, value: Any, **options: Any) -> None:
    write_text_atomic(path, json.dumps(json_safe(value), **options) + "\n")


def file_digest(path: str | Path) -> str:
    """sha256 hex digest of a file's bytes."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
