"""The 3D surface tab: marching cubes on a downsampled, lightly smoothed mask → one binary glTF (.glb).

Each class becomes its own mesh with per-vertex normals and the card's display colour; when several classes are
drawn, all but the smallest are translucent so that nested structures (white matter inside grey matter) show.
`surface_file` is what the tab shows for a review.
"""

from __future__ import annotations

import json
import math
import struct
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage
from skimage import measure

from .review import Review

MAX_GRID = 128
MAX_FACES = 90_000
_GLB_MAGIC, _JSON_CHUNK, _BIN_CHUNK = 0x46546C67, 0x4E4F534A, 0x004E4942
_FLOAT, _UINT32, _ARRAY_BUFFER, _ELEMENT_BUFFER = 5126, 5125, 34962, 34963
# RAS (z up) → glTF (y up): x stays, y ← z, z ← -y; a rotation, so face winding is kept.
_RAS_TO_GLTF = np.array([[1, 0, 0], [0, 0, 1], [0, -1, 0]], dtype=np.float32)


@dataclass(frozen=True)
class Surface:
    """A triangle mesh in glTF coordinates (metres are not implied: units are mm)."""

    positions: np.ndarray
    normals: np.ndarray
    faces: np.ndarray
    color: str
    opacity: float = 1.0


def class_surface(
    mask: np.ndarray,
    index: int,
    spacing_mm: Sequence[float],
    *,
    color: str,
    max_grid: int = MAX_GRID,
    max_faces: int = MAX_FACES,
) -> Surface | None:
    """The smoothed iso-surface of class `index` in a closest-RAS `(x, y, z)` mask, centred on the volume (mm).

    The mask is block-averaged to at most `max_grid` cells per axis, coarser still until the surface has at
    most `max_faces` triangles. Returns None when the class is absent (or too small to survive downsampling).
    """
    binary = mask == index
    if not binary.any():
        return None
    factor = max(1, math.ceil(max(mask.shape) / max_grid))
    while True:
        # A coarser grid, not a coarser marching step: the surface stays closed and smooth.
        smooth = ndimage.gaussian_filter(_block_mean(binary, factor), sigma=0.6)
        if smooth.max() <= 0.5:
            return None
        step = np.asarray(spacing_mm, dtype=np.float32) * factor
        verts, faces, normals, _ = measure.marching_cubes(np.pad(smooth, 1), level=0.5, spacing=tuple(step))
        if len(faces) <= max_faces or factor >= max(mask.shape) // 8:
            break
        factor += 1
    centre = (np.asarray(mask.shape, dtype=np.float32) * np.asarray(spacing_mm, dtype=np.float32)) / 2 + step
    positions = (verts.astype(np.float32) - centre) @ _RAS_TO_GLTF.T
    return Surface(positions, normals.astype(np.float32) @ _RAS_TO_GLTF.T, faces.astype(np.uint32), color)


def write_glb(surfaces: Sequence[Surface], path: Path) -> Path:
    """Write the surfaces as one binary glTF 2.0 file (one mesh and one material per surface)."""
    gltf: dict = {
        "asset": {"version": "2.0", "generator": "unet3d"},
        "scene": 0,
        "scenes": [{"nodes": list(range(len(surfaces)))}],
        "nodes": [{"mesh": i} for i in range(len(surfaces))],
        "meshes": [],
        "materials": [],
        "accessors": [],
        "bufferViews": [],
    }
    blob = bytearray()
    for i, surface in enumerate(surfaces):
        position = _add_array(gltf, blob, surface.positions, "VEC3", _ARRAY_BUFFER, with_bounds=True)
        normal = _add_array(gltf, blob, surface.normals, "VEC3", _ARRAY_BUFFER)
        indices = _add_array(gltf, blob, surface.faces.reshape(-1), "SCALAR", _ELEMENT_BUFFER)
        gltf["meshes"].append(
            {
                "primitives": [
                    {"attributes": {"POSITION": position, "NORMAL": normal}, "indices": indices, "material": i}
                ]
            }
        )
        gltf["materials"].append(_material(surface))
    gltf["buffers"] = [{"byteLength": len(blob)}]
    header = json.dumps(gltf, separators=(",", ":")).encode()
    header += b" " * (-len(header) % 4)
    blob += b"\x00" * (-len(blob) % 4)
    total = 12 + 8 + len(header) + 8 + len(blob)
    with path.open("wb") as handle:
        handle.write(struct.pack("<III", _GLB_MAGIC, 2, total))
        handle.write(struct.pack("<II", len(header), _JSON_CHUNK) + header)
        handle.write(struct.pack("<II", len(blob), _BIN_CHUNK) + bytes(blob))
    return path


def with_nested_translucency(surfaces: list[Surface], voxel_counts: Sequence[int]) -> list[Surface]:
    """All surfaces but the one of the smallest class get opacity 0.4, so inner structures stay visible."""
    if len(surfaces) < 2:
        return surfaces
    smallest = int(np.argmin(voxel_counts))
    return [
        Surface(s.positions, s.normals, s.faces, s.color, 1.0 if i == smallest else 0.4) for i, s in enumerate(surfaces)
    ]


def surface_file(review: Review | None, names: list[str] | None) -> str | None:
    """A .glb with the surfaces of the chosen classes (None when nothing is chosen or segmented)."""
    if review is None or not names:
        return None
    chosen = [c for c in review.classes if c.name in names and c.index != 0]
    voxels = {c["index"]: c["voxels"] for c in review.summary["classes"]}
    pairs = [(class_surface(review.layers.mask, c.index, review.layers.spacing_mm, color=c.color), c) for c in chosen]
    kept = [(s, c) for s, c in pairs if s is not None]
    if not kept:
        return None
    surfaces = with_nested_translucency([s for s, _ in kept], [voxels[c.index] for _, c in kept])
    return str(write_glb(surfaces, review.workdir / f"surface-{uuid.uuid4().hex[:8]}.glb"))


def _block_mean(binary: np.ndarray, factor: int) -> np.ndarray:
    if factor == 1:
        return binary.astype(np.float32)
    pads = [(0, -n % factor) for n in binary.shape]
    padded = np.pad(binary, pads)
    x, y, z = (n // factor for n in padded.shape)
    blocks = padded.reshape(x, factor, y, factor, z, factor)
    return blocks.mean(axis=(1, 3, 5), dtype=np.float32)


def _add_array(
    gltf: dict, blob: bytearray, array: np.ndarray, kind: str, target: int, *, with_bounds: bool = False
) -> int:
    data = np.ascontiguousarray(array)
    offset = len(blob)
    blob += data.tobytes()
    blob += b"\x00" * (-len(blob) % 4)
    gltf["bufferViews"].append({"buffer": 0, "byteOffset": offset, "byteLength": data.nbytes, "target": target})
    accessor = {
        "bufferView": len(gltf["bufferViews"]) - 1,
        "componentType": _UINT32 if data.dtype == np.uint32 else _FLOAT,
        "count": len(data),
        "type": kind,
    }
    if with_bounds:
        accessor["min"] = data.min(axis=0).tolist()
        accessor["max"] = data.max(axis=0).tolist()
    gltf["accessors"].append(accessor)
    return len(gltf["accessors"]) - 1


def _material(surface: Surface) -> dict:
    # glTF colours are linear; card colours are sRGB.
    srgb = [int(surface.color[i : i + 2], 16) / 255 for i in (1, 3, 5)]
    linear = [c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in srgb]
    material = {
        "pbrMetallicRoughness": {
            "baseColorFactor": [*linear, surface.opacity],
            "metallicFactor": 0.0,
            "roughnessFactor": 0.55,
        },
        "doubleSided": True,
    }
    if surface.opacity < 1.0:
        material["alphaMode"] = "BLEND"
    return material
