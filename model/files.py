"""File-system helpers shared by the writers of weights (here) and of exports (annotator)."""

from __future__ import annotations

import os
from pathlib import Path


def current_umask() -> int:
    """The process's umask. Read from /proc where there is one: the only portable way to read it
    is to set it (``os.umask``) and set it back, and a thread creating a file in between (the
    app's model thread, SQLite's journal) would get the wrong mask."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o077)  # elsewhere: strict for the instant it is set
    os.umask(mask)
    return mask


def give_ordinary_permissions(file: int | str | Path) -> None:
    """Gives a file (path or open descriptor) made private by its writer (``mkstemp``,
    safetensors: 0600) the permissions any new file of the user's gets: 0666 less the umask."""
    os.chmod(file, 0o666 & ~current_umask())


def flush_to_disk(path: str | Path) -> None:
    """Waits until the file's bytes are on the disk (``fsync``). A file written whole and renamed
    into place is flushed first: the rename then never shows a file whose bytes a power loss could
    still take, and the next writer's own ``fsync`` (the project's SQLite commit in the UI thread)
    does not wait for these bytes to go out with it (ext4 flushes a renamed file's data with the
    next journal commit)."""
    with open(path, "rb") as file:
        os.fsync(file.fileno())
