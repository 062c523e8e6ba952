"""gzip streams for .nii.gz files: ISA-L (python-isal, pinned) when it is installed, else Python's zlib.

Measured on the MNI152 T1 (1.6 MB → 8.7 MB) and its uint8 mask (bench/results/io-cpu.json): ISA-L inflates 4× faster
than zlib, and its level 1 deflates a mask ~10× faster than zlib's level 1 into a smaller file (163 vs 204 kB);
its levels 0 (larger) and 3 (slow) lose. Both write standard single-member gzip that any reader (nibabel, gzip)
takes.
"""

from __future__ import annotations

import gzip
import zlib
from typing import IO, Any, cast

__all__ = ["GZIP_BACKEND", "WRITE_LEVEL", "writing"]

try:
    from isal import igzip, isal_zlib

    GZIP_BACKEND = "isal"
    GzipStream: type[gzip.GzipFile] = igzip.IGzipFile
    # What a corrupt deflate stream raises: zlib's error, or ISA-L's (which does not subclass it).
    DEFLATE_ERRORS: tuple[type[Exception], ...] = (zlib.error, cast(type[Exception], isal_zlib.error))
except ImportError:  # pragma: no cover - isal is a pinned dependency; this keeps a bare install reading
    GZIP_BACKEND = "zlib"
    GzipStream = gzip.GzipFile
    DEFLATE_ERRORS = (zlib.error,)

# What reading a gzip stream raises when the file is truncated, corrupt or unreadable.
STREAM_ERRORS: tuple[type[Exception], ...] = (OSError, EOFError, *DEFLATE_ERRORS)

# The level masks and probability maps are written at: ISA-L's level 1 is both faster and smaller than its 0 and 3.
WRITE_LEVEL = 1


def reading(raw: IO[bytes], *, whole: bool = True) -> gzip.GzipFile:
    """A gzip stream inflating `raw` (an open binary file). ISA-L reads 512 KiB of the file at a time: for a stream
    read to its end; a quick look at a header (`whole=False`) takes zlib's small reads instead."""
    return GzipStream(fileobj=raw, mode="rb") if whole else gzip.GzipFile(fileobj=raw, mode="rb")


def writing(raw: IO[bytes], level: int = WRITE_LEVEL) -> gzip.GzipFile:
    """A gzip stream deflating into `raw` as nibabel writes .nii.gz: no file name and mtime 0, so that the same
    image always gives the same bytes."""
    stream: Any = GzipStream("", "wb", level, raw, mtime=0)
    return stream
