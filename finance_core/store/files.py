"""Files the app creates are its owner's alone: a umask for each process, explicit modes too.

The store holds password and token hashes: the SQLite file, its -wal and -shm, the data
directory and demo.env are 0600/0700 (SPEC 19). Every entry point (`make run`, the listener,
the dashboard, the CLI) sets the umask first; the modes set here also fix files an older
version, or another program, created more open.
"""

import os
from pathlib import Path

OWNER_ONLY_UMASK = 0o077
FILE_MODE = 0o600
DIRECTORY_MODE = 0o700
SQLITE_COMPANIONS = ("", "-wal", "-shm", "-journal")


def restrict_umask() -> None:
    """New files and directories of this process (and its children) are its owner's alone."""
    os.umask(OWNER_ONLY_UMASK)


def _owned(path: Path) -> bool:
    try:
        return path.stat().st_uid == os.geteuid()
    except FileNotFoundError:
        return False


def private_directory(path: Path) -> None:
    """Create `path` (and parents) if missing; the directory itself 0700 when it is ours."""
    path.mkdir(parents=True, exist_ok=True, mode=DIRECTORY_MODE)
    if _owned(path):
        path.chmod(DIRECTORY_MODE)


def private_file(path: Path) -> None:
    """An existing file of ours: 0600."""
    if _owned(path):
        path.chmod(FILE_MODE)


def private_sqlite_files(database: Path) -> None:
    """The SQLite file and its companions 0600 (SQLite gives new -wal/-shm the file's mode)."""
    for suffix in SQLITE_COMPANIONS:
        private_file(Path(f"{database}{suffix}"))
