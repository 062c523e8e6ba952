"""Atomic file replacement: a reader, or a resumed batch run, sees the old file or the whole new one, never half."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

__all__ = ["TEMPORARY_MARK"]

# Files are written to `<name><TEMPORARY_MARK><pid>` beside their final name first, then renamed.
TEMPORARY_MARK = ".tmp-"


def temporary_path(path: Path) -> Path:
    """`<folder>/<name>.tmp-<pid>`: where this process writes `path` before renaming it."""
    return path.with_name(f"{path.name}{TEMPORARY_MARK}{os.getpid()}")


@contextmanager
def replacing(path: Path, mode: str = "wb", **open_arguments: Any) -> Iterator[IO[Any]]:
    """Open a temporary file for writing; on success sync it to disk and rename it over `path`.

    The rename is atomic within one file system, so a process killed while writing leaves at most the temporary
    file behind (a later batch run removes it); on an error the temporary file is removed and `path` is untouched.

    Example:
        >>> with replacing(Path("out/results.csv"), "w", newline="") as file:
        ...     file.write(text)
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = temporary_path(path)
    try:
        with open(temporary, mode, **open_arguments) as file:
            yield file
            file.flush()
            os.fsync(file.fileno())  # the data must be on disk before the name points at it
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
