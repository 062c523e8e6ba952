"""Host memory: how much is left, and refusing a volume up front when segmenting it would certainly not fit.

Without this, a volume too large for the machine does not fail with an error: Linux overcommits, the arrays are
allocated lazily, and the kernel's out-of-memory killer ends the process (or the whole server) mid-inference.
"""

from __future__ import annotations

import math
from pathlib import Path

from .errors import VolumeTooLargeError

# Per-voxel costs are fitted to measured peaks (`python bench/memory.py`) and then scaled down, so that estimates
# stay well below them: a refusal means the run could not have fitted, never that it might not have.
_PEAK_SHARE = 0.85
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


def load_bytes(voxels: int, stored_itemsize: int) -> int:
    """Peak bytes of reading a volume: the stored voxels, then their float32 copy."""
    return voxels * (stored_itemsize + 4)


def predict_bytes(
    input_voxels: int,
    network_voxels: int,
    num_classes: int,
    *,
    activation_bytes: float,
    stitch_bytes: float,
    resampled: bool,
    probabilities: bool,
) -> float:
    """A low estimate of the peak bytes of one `Segmenter.predict` once the volume is read, the volume included.

    Args:
        input_voxels: voxels of the input grid (the mask's).
        network_voxels: voxels the network sees (after the foreground crop and the resampling to the card's spacing).
        num_classes: output channels.
        activation_bytes: the planner's activation figure for one forward pass on this host (0 on a GPU); it errs
            high (a whole 1 mm brain in bf16: 164 B/voxel planned, ~133 measured), hence the 0.75.
        stitch_bytes: the sliding window's blending buffers.
        resampled: whether class probabilities are resized back to the input grid.
        probabilities: whether the caller asked for the probabilities.
    """
    per_class = 4 * num_classes
    if resampled:  # probabilities on both grids: stitched on the network's, resized onto the input's
        per_input, per_network = 2 + per_class, 20 + per_class
    else:  # no full probability map unless asked for one
        per_input, per_network = 8, 4 + (per_class if probabilities else 0)
    working = 0.75 * activation_bytes + stitch_bytes
    return _PEAK_SHARE * (working + per_input * input_voxels + per_network * network_voxels)


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
