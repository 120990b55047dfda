"""Small file helpers: every file the toolkit writes goes through an atomic temp-file + rename."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any


def atomic_write(path: str | os.PathLike, write: Callable[[str], None]) -> Path:
    """Call ``write(tmp_path)`` and move the result onto ``path`` in one rename.

    A reader never sees a half-written file, and a killed process leaves the old
    file (or nothing) behind.
    """
    path = Path(path)
    if path.is_dir():
        raise CannotWriteError(f"cannot write {path}: it is a folder")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as err:
        raise CannotWriteError(f"cannot write {path}: {_reason(err)}") from None
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600; give the file the usual mode
        os.replace(tmp, path)
    except BaseException as err:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(err, OSError) and not isinstance(err, CannotWriteError):  # disk full, ...
            raise CannotWriteError(f"cannot write {path}: {_reason(err)}") from None
        raise
    return path


class CannotWriteError(OSError):
    """An output file could not be written (a read-only or full disk, a file where a folder is
    needed, ...); the message names the file the caller asked for, not the temporary one."""


def _reason(err: OSError) -> str:
    if isinstance(err, (FileExistsError, NotADirectoryError)):
        return "a file stands where a folder is needed on that path"
    return err.strerror or str(err)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    return atomic_write(path, lambda tmp: Path(tmp).write_bytes(data))


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")
