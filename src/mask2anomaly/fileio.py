"""File writing that survives kills and full disks, and output folders that know what made them.

Anything a long run produces (checkpoints, maps, pictures, reports, datasets) is written to a
temporary file in the target folder (`.m2a-tmp.<name>.*`) and renamed over the target, so an
interrupted run never leaves a half-written file under its final name, and the temporaries a
killed run left behind are recognisable and removed by the next run.

An `OutputFolder` is owned by one run at a time (a lock file with the owner's pid; a lock whose
process is gone is stale and taken over), records the settings that produced it (`run.json`:
weights digest, resolved config, ...) and a journal of finished items, each with the signature of
its input and the sizes of its files. A re-run resumes only items whose input and files match, and
refuses a folder made with other settings unless told to replace it.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import socket
import tempfile
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from .errors import UserError

TEMP_PREFIX = ".m2a-tmp."
STATE_DIR = ".mask2anomaly"  # bookkeeping of an OutputFolder: lock, run.json, journals


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
    ensure_folder(path.parent)
    handle, name = tempfile.mkstemp(
        dir=path.parent, prefix=f"{TEMP_PREFIX}{path.name}.", suffix=suffix
    )
    os.close(handle)
    return Path(name)


def publish(temporary: Path, path: Path) -> None:
    """Rename a finished temporary file to `path`, with the permissions a plain open() would
    give it (mkstemp creates files readable by their owner only)."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(temporary, 0o666 & ~umask)
    os.replace(temporary, path)


def remove_temporaries(folder: Path) -> int:
    """Delete the temporaries interrupted writers left below `folder`; returns how many."""
    removed = 0
    for path in folder.rglob(f"{TEMP_PREFIX}*"):
        if path.is_file():
            path.unlink(missing_ok=True)
            removed += 1
    return removed


def ensure_folder(path: Path, flag: str = "") -> Path:
    """Create folder `path` (and parents); one-line error when a file stands in the way."""
    for part in (path, *path.parents):
        if part.exists() and not part.is_dir():
            where = f"{flag} {path}" if flag else str(path)
            raise UserError(f"{where}: {part} exists and is not a folder")
        if part.is_dir():
            break
    path.mkdir(parents=True, exist_ok=True)
    return path


def write_atomic(path: Path, write: Callable[[Path], None]) -> None:
    """Call write(temporary path) beside `path`, then rename it to `path` (same suffix, so
    writers that pick a format by suffix work)."""
    with atomic_path(path, suffix=path.suffix) as temporary:
        write(temporary)


def save_image_atomic(path: Path, pixels: np.ndarray, **options: Any) -> None:
    """uint8 RGB / uint16 grey array -> image file (format from the suffix), atomically."""
    from PIL import Image

    write_atomic(path, lambda temporary: Image.fromarray(pixels).save(temporary, **options))


def save_npy_atomic(path: Path, array: np.ndarray) -> None:
    write_atomic(path, lambda temporary: np.save(temporary, array))


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


def file_signature(*paths: Path | None) -> list[list[int]]:
    """What identifies input files cheaply: (size, modification time in ns) of each."""
    signature = []
    for path in paths:
        if path is not None:
            stat = path.stat()
            signature.append([stat.st_size, stat.st_mtime_ns])
    return signature


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """The records of a JSON-lines file; a torn or garbled line (a killed writer) is skipped."""
    records = []
    if path.is_file():
        for line in path.read_text(errors="replace").splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict):
                records.append(record)
    return records


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


class FolderLock:
    """`<root>/.mask2anomaly/lock`, holding the owner's pid and host: a second run on the same
    folder is refused while the owner lives; the lock of a process that is gone is taken over."""

    def __init__(self, root: Path, command: str) -> None:
        self.root, self.command = root, command
        self.path = root / STATE_DIR / "lock"
        self.held = False

    def __enter__(self) -> FolderLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def acquire(self) -> None:
        ensure_folder(self.path.parent)
        me = {"pid": os.getpid(), "host": socket.gethostname(), "command": self.command}
        for _ in range(2):
            try:
                handle = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                try:
                    owner = json.loads(self.path.read_text())
                except (OSError, ValueError):
                    owner = {}
                same_host = owner.get("host") == me["host"]
                if isinstance(owner.get("pid"), int) and same_host and _pid_alive(owner["pid"]):
                    raise UserError(
                        f"--out {self.root}: in use by another run (mask2anomaly "
                        f"{owner.get('command')}, pid {owner['pid']}); wait for it to finish or "
                        "choose another --out"
                    ) from None
                self.path.unlink(missing_ok=True)  # stale: its process is gone
                continue
            with os.fdopen(handle, "w") as file:
                json.dump(me, file)
            self.held = True
            return
        raise UserError(f"--out {self.root}: could not take the lock {self.path}")

    def release(self) -> None:
        if self.held:
            self.path.unlink(missing_ok=True)
            self.held = False


class OutputFolder:
    """An output folder owned by one run (see the module docstring).

    Args:
        root: the folder (created).
        command: what writes it ("predict", "evaluate", ...); another command's folder is
            refused.
        settings: what makes its outputs (JSON-able); a folder made with other settings is
            refused, or cleared when `replace` is set.
        replace: on other settings (or a folder of unknown content), delete the files the old
            journal lists and start over instead of refusing.
        journal: name of this process's journal (several processes of one run write one each).
        lock: take the folder's lock (one process of a multi-process run does).
    """

    def __init__(
        self,
        root: str | Path,
        *,
        command: str,
        settings: dict[str, Any],
        replace: bool = False,
        journal: str = "journal",
        lock: bool = True,
    ) -> None:
        self.root, self.command = Path(root), command
        self.settings = json.loads(json.dumps(json_safe(settings), sort_keys=True))
        self.replace, self.journal_name, self.lock = replace, journal, lock
        self.state = self.root / STATE_DIR
        self.entries: dict[str, dict[str, Any]] = {}
        self._lock = FolderLock(self.root, command)

    # -- ownership --------------------------------------------------------------------------

    def __enter__(self) -> OutputFolder:
        ensure_folder(self.root, "--out")
        if self.lock:
            self._acquire()
        try:
            remove_temporaries(self.root)
            self._check_settings()
            for path in sorted(self.state.glob("*.jsonl")):
                for record in read_jsonl(path):
                    self.entries[str(record.get("key"))] = record
        except BaseException:
            self._release()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self._release()

    def _acquire(self) -> None:
        self._lock.acquire()

    def _release(self) -> None:
        self._lock.release()

    def _check_settings(self) -> None:
        record_path = self.state / "run.json"
        wanted = {"command": self.command, "settings": self.settings}
        try:
            previous = json.loads(record_path.read_text()) if record_path.is_file() else None
        except (OSError, ValueError):
            previous = {"command": "?", "settings": {}}
        others = [p for p in self.root.iterdir() if p.name != STATE_DIR]
        if previous == wanted:
            return
        if previous is not None or others:
            if not self.replace:
                raise UserError(
                    f"--out {self.root}: {self._difference(previous)}; pass --overwrite to "
                    "replace its outputs, or choose another --out"
                )
            self._clear()
        write_json_atomic(record_path, wanted, indent=1, sort_keys=True)

    def _difference(self, previous: dict[str, Any] | None) -> str:
        if previous is None:
            return f"holds files not written by mask2anomaly {self.command}"
        if previous.get("command") != self.command:
            return f"holds the outputs of mask2anomaly {previous.get('command')}"
        old, new = _flatten(previous.get("settings", {})), _flatten(self.settings)
        keys = sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k))
        shown = ", ".join(keys[:3]) + (" ..." if len(keys) > 3 else "")
        return f"holds outputs made with other settings ({shown})"

    def _clear(self) -> None:
        """Delete the outputs the old journals list, and the journals."""
        for path in sorted(self.state.glob("*.jsonl")):
            for record in read_jsonl(path):
                for name in record.get("files", {}):
                    (self.root / name).unlink(missing_ok=True)
            path.unlink()

    # -- the journal ------------------------------------------------------------------------

    def is_done(self, key: str, signature: Any) -> bool:
        """True when `key` was finished from an input with this signature and its files are
        all there with the sizes they had."""
        entry = self.entries.get(key)
        if entry is None or entry.get("signature") != json_safe(signature):
            return False
        for name, size in entry.get("files", {}).items():
            path = self.root / name
            if not path.is_file() or path.stat().st_size != size:
                return False
        return True

    def mark_done(self, key: str, signature: Any, files: Iterable[Path]) -> None:
        """Record `key` as finished: its files are written (checked here: present, not empty)."""
        sizes = {}
        for path in files:
            size = path.stat().st_size if path.is_file() else 0
            if size == 0:
                raise OSError(f"{path} was not written")
            sizes[path.relative_to(self.root).as_posix()] = size
        record = {"key": key, "signature": json_safe(signature), "files": sizes}
        line = json.dumps(record) + "\n"
        with (ensure_folder(self.state) / f"{self.journal_name}.jsonl").open("a") as file:
            file.write(line)
            file.flush()
            os.fsync(file.fileno())
        self.entries[key] = record


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict):
        flat: dict[str, Any] = {}
        for key, item in value.items():
            flat.update(_flatten(item, f"{prefix}{key}."))
        return flat
    return {prefix.rstrip("."): value}
