"""Host memory: how much is left, and refusing a volume up front when what it needs would certainly not fit.

Without this, a volume too large for the machine does not fail with an error: Linux overcommits, the arrays are
allocated lazily, and the kernel's out-of-memory killer ends the process (or the whole server) mid-inference.
What a read or a prediction needs is estimated in planning.py.
"""

from __future__ import annotations

import math
from pathlib import Path

from .errors import VolumeTooLargeError

_MEMINFO = Path("/proc/meminfo")
_CGROUP_V2 = Path("/sys/fs/cgroup")
_CGROUP_V1 = Path("/sys/fs/cgroup/memory")


def available_bytes() -> int | None:
    """Bytes this process can still allocate: free RAM + swap, capped by a cgroup (container) limit; None if unknown."""
    known = [value for value in (_meminfo_available(), _cgroup_headroom()) if value is not None]
    return min(known) if known else None


def require_memory(needed: float, action: str) -> None:
    """Raise `VolumeTooLargeError` when `needed` bytes are more than the memory available.

    Args:
        needed: estimated bytes still to allocate.
        action: what needs them, for the message ("segmenting this 512×512×400 volume").
    """
    available = available_bytes()
    if available is None or needed <= available:
        return
    raise VolumeTooLargeError(
        f"{action} needs about {_gigabytes(needed)} of memory, but {_gigabytes(available)} is available: "
        "crop it to the region of interest or downsample it first, or use a machine with more memory"
    )


def describe(shape: tuple[int, ...]) -> str:
    """For messages: "this 512×512×400 volume (104.9 million voxels)"."""
    voxels = math.prod(shape)
    count = f"{voxels / 1e9:,.1f} billion" if voxels >= 1e9 else f"{voxels / 1e6:,.1f} million"
    return f"this {'×'.join(str(n) for n in shape)} volume ({count} voxels)"


def _gigabytes(count: float) -> str:
    return f"{count / 2**30:.1f} GiB"


def _meminfo_available() -> int | None:
    fields = _read_fields(_MEMINFO)
    if "MemAvailable" not in fields:
        return None
    return (fields["MemAvailable"] + fields.get("SwapFree", 0)) * 1024


def _cgroup_headroom() -> int | None:
    """What the container's memory limit still allows (page cache the kernel can drop does not count as used)."""
    v2, v1 = _CGROUP_V2, _CGROUP_V1
    for limit_file, usage_file, stat_file, inactive in (
        (v2 / "memory.max", v2 / "memory.current", v2 / "memory.stat", "inactive_file"),
        (v1 / "memory.limit_in_bytes", v1 / "memory.usage_in_bytes", v1 / "memory.stat", "total_inactive_file"),
    ):
        limit, usage = _read_int(limit_file), _read_int(usage_file)
        if limit is None or usage is None or limit >= 2**60:  # "max" or v1's "unlimited" (a huge number)
            continue
        reclaimable = _read_fields(stat_file).get(inactive, 0)
        return max(0, limit - (usage - reclaimable))
    return None


def _read_int(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def _read_fields(path: Path) -> dict[str, int]:
    """`name value` lines (/proc/meminfo, cgroup memory.stat) as integers; unreadable → empty."""
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return {}
    fields = {}
    for line in lines:
        parts = line.replace(":", " ").split()
        if len(parts) >= 2 and parts[1].isdigit():
            fields[parts[0]] = int(parts[1])
    return fields
