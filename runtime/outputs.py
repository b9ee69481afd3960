"""Where a command writes, checked before it works, so that nothing a user made is lost.

* `check_new_file` / `check_new_files`: a target that exists is refused unless the user said
  `--overwrite`; a directory, a parent that is a file or where nothing can be created (found by
  creating and removing a probe file) are refused before any work starts.
* `check_apart`: an output is never what the command reads, nor inside it, nor holding it.
* `OwnedFile`: a file only one process writes at a time. A lock file beside it holds the
  writer's PID (`flock`, released by the kernel if the writer dies), so a second writer is told
  who holds it.
* `scratch_directory` / `publish_directory`: work in progress lives in a hidden directory the tool
  owns, next to its destination, removed on failure and on Ctrl+C; it takes the destination's name
  only when done.
* `atomic_write` / `atomic_writes`: the same for files; a reader sees the old files or the new ones,
  never a part.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import secrets
import shutil
import tempfile
from pathlib import Path
from typing import IO, Iterable, Iterator, Optional

from rdvla.runtime.interrupts import held, raise_if_received

LOCK_SUFFIX = ".lock"


class OutputError(ValueError):
    """An output path that cannot be written as asked (one line naming it and the way out)."""


def check_new_file(path: Path, *, overwrite: bool, option: str) -> Path:
    """`path` as a file this command may create (or replace, with `overwrite`)."""
    path = Path(path)
    if path.is_dir():
        raise OutputError(f"{option} {path} is a directory; give a file name")
    if (path.exists() or path.is_symlink()) and not overwrite:  # a dangling link would write wherever it points
        raise OutputError(f"{option} {path} exists; choose another name, or add --overwrite to replace it")
    _check_parent(path, option)
    return path


def check_new_files(directory: Path, names: Iterable[str], *, overwrite: bool, option: str) -> Path:
    """`directory` (created if absent) as the place for files `names`, none of which may exist without `overwrite`."""
    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise OutputError(f"{option} {directory} is a file; give a directory")
    if directory.is_dir():
        taken = sorted(name for name in names if (directory / name).exists())
        if taken and not overwrite:
            raise OutputError(f"{option} {directory} already holds {', '.join(taken)}; choose another directory, "
                              "or add --overwrite to replace them")
        if not _can_create_in(directory):
            raise OutputError(f"{option} {directory} is not writable (read-only, or permission denied)")
    else:
        _check_parent(directory, option)
    return directory


def check_new_directory(path: Path, *, overwrite: bool, option: str) -> Path:
    """`path` as a directory this command creates whole (or replaces, with `overwrite`)."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise OutputError(f"{option} {path} is a file; give a directory name")
    if path.exists() and not overwrite:
        raise OutputError(f"{option} {path} exists; choose another name, or add --overwrite to replace it")
    _check_parent(path, option)
    return path


def check_apart(path: Path, source: Path, *, option: str, what: str) -> None:
    """Refuse an output `path` that is the input `source` (a `what`: bundle, checkpoint), lies inside it or holds
    it: writing it, or replacing it with --overwrite, would change what the command reads."""
    output, read = Path(path).resolve(), Path(source).resolve()
    if output == read or read in output.parents:
        raise OutputError(f"{option} {path} lies inside the {what} {source}, which this command reads; write it elsewhere")
    if output in read.parents:
        raise OutputError(f"{option} {path} holds the {what} {source}, which this command reads; write it elsewhere")


def _check_parent(path: Path, option: str) -> None:
    parent = path.parent if str(path.parent) else Path(".")
    existing = parent
    while not existing.exists():  # the first existing ancestor must let us create the rest
        existing = existing.parent
    if not existing.is_dir():
        raise OutputError(f"{option} {path}: {existing} is a file, not a directory")
    if not _can_create_in(existing):
        raise OutputError(f"{option} {path}: cannot write in {existing} (read-only, or permission denied); "
                          "choose another place")


def _can_create_in(directory: Path) -> bool:
    """Whether a file can be made in `directory`, found by making one: permission bits do not tell (root, read-only
    mounts, /proc), and a command must not learn it after minutes of work."""
    try:
        fd, probe = tempfile.mkstemp(prefix=".rdvla-probe-", dir=directory)
    except OSError:
        return False
    os.close(fd)
    os.unlink(probe)
    return True


class OwnedFile:
    """A text file this process alone writes, line-buffered; `close()` flushes, syncs and releases it."""

    def __init__(self, path: Path, *, overwrite: bool, option: str) -> None:
        check_new_file(path, overwrite=overwrite, option=option)
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._lock_path = path.with_name(path.name + LOCK_SUFFIX)
        lock_fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(lock_fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(lock_fd)
            raise OutputError(f"{option} {path} is being written by another process (PID {holder}); "
                              "choose another name") from None
        os.ftruncate(lock_fd, 0)
        os.pwrite(lock_fd, f"{os.getpid()}\n".encode(), 0)
        self._lock_fd: Optional[int] = lock_fd
        flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if overwrite else os.O_EXCL)
        try:
            fd = os.open(path, flags, 0o644)
        except FileExistsError:  # made between the check and now, by a writer that took no lock
            self._release()
            raise OutputError(f"{option} {path} exists; choose another name, or add --overwrite to replace it") from None
        self._file: Optional[IO[str]] = os.fdopen(fd, "w", encoding="utf-8", buffering=1)

    def write(self, text: str) -> None:
        if self._file is None:
            raise ValueError(f"{self.path} is closed")
        self._file.write(text)

    def close(self) -> None:
        if self._file is not None:
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
            self._file = None
        self._release()

    def _release(self) -> None:
        if self._lock_fd is not None:
            with contextlib.suppress(FileNotFoundError):
                self._lock_path.unlink()  # still holding the lock: nobody else is using the file
            os.close(self._lock_fd)
            self._lock_fd = None


def publish_directory(work: Path, destination: Path) -> None:
    """Give the finished `work` the name `destination`, replacing what is there (checked by the caller);
    not after Ctrl+C or SIGTERM, even one a library swallowed."""
    raise_if_received()
    if destination.exists():
        retired = destination.with_name(f".{destination.name}.rdvla-replaced-{os.getpid()}")
        destination.rename(retired)
        work.rename(destination)
        shutil.rmtree(retired, ignore_errors=True)
    else:
        work.rename(destination)


@contextlib.contextmanager
def scratch_directory(destination: Path) -> Iterator[Path]:
    """A hidden working directory beside `destination`, removed unless the body renames it away
    (also on Ctrl+C and SIGTERM: see `rdvla.runtime.interrupts`)."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    # mkdir, not mkdtemp: the published folder gets the user's umask (mkdtemp's 0700 would keep it from other users).
    scratch = destination.parent / f".{destination.name}.rdvla-{os.getpid()}-{secrets.token_hex(4)}"
    scratch.mkdir()
    try:
        yield scratch
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


@contextlib.contextmanager
def atomic_write(path: Path) -> Iterator[Path]:
    """`atomic_writes` of one file."""
    with atomic_writes(path) as (temporary,):
        yield temporary


@contextlib.contextmanager
def atomic_writes(*paths: Path) -> Iterator[tuple[Path, ...]]:
    """A hidden file beside each of `paths` for the body to write by name (numpy, Pillow and matplotlib open
    them themselves; each name ends like its path's, so they pick the same format). When the body finishes
    they are flushed to disk and take their paths' names, replacing what is there (checked by the caller),
    one rename after another with Ctrl+C and SIGTERM held until the last; on failure, or a signal before
    then, they are removed and the paths are as they were."""
    temporaries = tuple(path.with_name(f".rdvla-{os.getpid()}-{secrets.token_hex(4)}-{path.name}") for path in paths)
    try:
        for temporary in temporaries:
            # os.open with 0o666, not mkstemp: the file gets the user's umask (mkstemp's 0600 keeps other users out).
            os.close(os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        yield temporaries
        for temporary in temporaries:
            fd = os.open(temporary, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        raise_if_received()
        with held():
            for temporary, path in zip(temporaries, paths):
                os.replace(temporary, path)
    finally:
        for temporary in temporaries:
            temporary.unlink(missing_ok=True)
