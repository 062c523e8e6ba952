"""The memory of the review UI's tabs: every tab's review counts against one budget (UNET3D_SESSION_MEMORY_MB), and
a tab that closes or expires gives its arrays back at once.

A review holds about 8 bytes per voxel (the image as float32, the mask, the uncertainty as float16, a reference
mask): ~70 MB for a 1 mm brain. Before a tab segments, it reserves that much for its new review (in place of its
previous one); past the budget it waits up to UNET3D_SESSION_WAIT_S for other tabs to let go, then the user is told
that the server is busy and when to retry. A tab's arrays go when it closes (Gradio's `unload`, when the page's
heartbeat ends: Gradio itself would keep them an hour), when its session expires (UNET3D_SESSION_TTL_S after its last
change), or when it segments another volume. Freed arrays are handed back to the system (`release_freed_memory`):
glibc keeps freed pages of its per-thread arenas otherwise, and RSS would stay at its peak.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import math
import weakref
from functools import cache
from pathlib import Path
from typing import Any

import gradio as gr

from unet3d.errors import Unet3dError
from unet3d.io import inspect_volume

from ..limits import MemoryBudget
from ..settings import Settings

logger = logging.getLogger(__name__)

BYTES_PER_VOXEL = 4 + 1 + 2 + 1  # image (float32), mask, uncertainty (float16), reference mask


class SessionMemory:
    """The budget shared by every tab of one UI (until `configure`: 2 GiB, a 10 s wait, an hour's life)."""

    def __init__(self) -> None:
        self.budget = MemoryBudget(2048 * 2**20, wait_s=10.0, expires_after_s=3600.0)
        self._watched: set[int] = set()

    def __deepcopy__(self, memo: dict[int, Any]) -> SessionMemory:
        return self  # shared by every tab: Gradio deep-copies a tab's first state, not the server's budget

    def configure(self, settings: Settings) -> None:
        """Apply UNET3D_SESSION_MEMORY_MB, UNET3D_SESSION_WAIT_S and UNET3D_SESSION_TTL_S (at startup)."""
        self.budget = MemoryBudget(
            settings.session_memory_bytes, wait_s=settings.session_wait_s, expires_after_s=settings.session_ttl_s
        )

    def reserve(self, owner: object, voxels: int) -> None:
        """Hold room for a review of `voxels` voxels for the tab `owner` (in place of its previous review).

        Raises:
            VolumeTooLargeError: the review alone passes the budget.
            ServiceBusyError: no room within the wait.
        """
        key = id(owner)
        self.budget.reserve(key, voxels * BYTES_PER_VOXEL)
        if key not in self._watched:  # a tab Gradio drops without closing it (its capacity) releases all the same
            self._watched.add(key)
            weakref.finalize(owner, self._forget, key)

    def touch(self, owner: object) -> None:
        """The tab `owner` is in use (its holding expires a session's time to live after the last use)."""
        self.budget.touch(id(owner))

    def release(self, owner: object) -> None:
        """The tab `owner` holds no review any more: give its room back, and the freed pages to the system."""
        self.budget.release(id(owner))
        release_freed_memory()

    def _forget(self, key: int) -> None:
        self._watched.discard(key)
        self.budget.release(key)


def header_voxels(path: Path) -> int | None:
    """The voxels of an uploaded volume from its header (None when it has none to read, e.g. not NIfTI)."""
    try:
        shape = inspect_volume(path, verify_data=False).shape
    except Unet3dError:
        return None
    return math.prod(int(n) for n in shape[:3])


def close_tab(blocks: gr.Blocks | None, request: gr.Request) -> None:
    """Gradio's `unload` handler: the tab has closed, so its state goes now (each state's delete_callback runs,
    `Session.close` among them) rather than an hour later, and so does Gradio's per-tab copy of the page config."""
    session_hash = getattr(request, "session_hash", None)
    holder = getattr(blocks, "state_holder", None)
    if session_hash is None or holder is None or session_hash not in holder:
        return
    holder.delete_state(session_hash)
    with holder.lock:
        holder.session_data.pop(session_hash, None)
        holder.time_last_used.pop(session_hash, None)
    release_freed_memory()


@cache
def _malloc_trim() -> Any:
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name or "libc.so.6")
        trim = libc.malloc_trim
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to ask
        return None
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    return trim


def release_freed_memory() -> None:
    """Ask glibc to return the free pages of every malloc arena to the system (`malloc_trim(0)`)."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)
