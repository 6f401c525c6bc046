"""Small file helpers: durable atomic replace, directory fsync, one-number checkpoint files."""

from __future__ import annotations

import os

_CHECKPOINT_VERSION = 0
_MAX_CHECKPOINT_BYTES = 4096


def fsync_dir(directory: str) -> None:
    """Make renames, creations and deletions in `directory` durable."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_all(fd: int, data: bytes | bytearray | memoryview) -> None:
    """os.write until everything is written (a regular file may take a short write near ENOSPC)."""
    view = memoryview(data)
    done = os.write(fd, view)
    while done < len(view):
        done += os.write(fd, view[done:])


def atomic_write(path: str, data: bytes, *, durable: bool) -> None:
    """Replace `path` by `data` atomically: temp file, (fsync), rename, (fsync dir)."""
    tmp = path + ".tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        write_all(fd, data)
        if durable:
            os.fdatasync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    if durable:
        fsync_dir(os.path.dirname(path) or ".")


def fsync_path(path: str) -> None:
    """fdatasync a file by name; a file deleted meanwhile (retention, compaction) needs no sync."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return
    try:
        os.fdatasync(fd)
    finally:
        os.close(fd)


def read_offset_checkpoint(path: str) -> int | None:
    """A checkpoint holding one offset ("0\\n<offset>\\n"). None when missing or unreadable."""
    try:
        with open(path, "rb") as f:
            text = f.read(_MAX_CHECKPOINT_BYTES).decode("ascii")
        version, value = text.split()[:2]
        if int(version) != _CHECKPOINT_VERSION:
            return None
        offset = int(value)
        return offset if offset >= 0 else None
    except (OSError, ValueError, UnicodeDecodeError):
        return None


def write_offset_checkpoint(path: str, offset: int) -> None:
    atomic_write(path, f"{_CHECKPOINT_VERSION}\n{offset}\n".encode("ascii"), durable=True)
