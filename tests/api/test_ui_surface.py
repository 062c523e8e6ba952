"""The 3D surface: marching cubes → decimated binary glTF with normals and class colours."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest

from api.ui.surface import Surface, class_surface, with_nested_translucency, write_glb


def sphere_mask(shape=(40, 40, 40), radius=12.0, label=1) -> np.ndarray:
    grid = np.stack(np.meshgrid(*[np.arange(n) - (n - 1) / 2 for n in shape], indexing="ij"))
    return ((grid**2).sum(0) <= radius**2).astype(np.uint8) * label


def read_glb(path) -> tuple[dict, bytes]:
    data = path.read_bytes()
    magic, version, total = struct.unpack("<III", data[:12])
    assert (magic, version, total) == (0x46546C67, 2, len(data))
    json_length, json_type = struct.unpack("<II", data[12:20])
    assert json_type == 0x4E4F534A
    document = json.loads(data[20 : 20 + json_length])
    bin_length, bin_type = struct.unpack("<II", data[20 + json_length : 28 + json_length])
    assert bin_type == 0x004E4942
    return document, data[28 + json_length : 28 + json_length + bin_length]


def test_sphere_surface_has_the_right_size_in_millimetres_and_outward_normals():
    surface = class_surface(sphere_mask(), 1, (2.0, 2.0, 2.0), color="#e69f00")
    assert surface is not None
    radii = np.linalg.norm(surface.positions, axis=1)
    assert radii.mean() == pytest.approx(24.0, rel=0.1)  # 12 voxels × 2 mm
    outward = np.einsum("ij,ij->i", surface.normals, surface.positions) > 0
    assert outward.mean() > 0.95


def test_absent_class_has_no_surface():
    assert class_surface(sphere_mask(), 2, (1.0, 1.0, 1.0), color="#ffffff") is None


def test_surface_is_coarsened_until_under_the_face_budget():
    fine = class_surface(sphere_mask((80, 80, 80), 30), 1, (1.0, 1.0, 1.0), color="#fff000", max_grid=80)
    capped = class_surface(
        sphere_mask((80, 80, 80), 30), 1, (1.0, 1.0, 1.0), color="#fff000", max_grid=80, max_faces=2000
    )
    assert fine is not None and capped is not None
    assert len(capped.faces) <= 2000 < len(fine.faces)


def test_glb_holds_one_coloured_mesh_per_surface(tmp_path):
    outer = class_surface(sphere_mask(radius=14), 1, (1.0, 1.0, 1.0), color="#e69f00")
    inner = class_surface(sphere_mask(radius=6, label=2), 2, (1.0, 1.0, 1.0), color="#56b4e9")
    assert outer is not None and inner is not None
    surfaces = with_nested_translucency([outer, inner], [5000, 900])
    document, blob = read_glb(write_glb(surfaces, tmp_path / "s.glb"))
    assert len(document["meshes"]) == 2
    materials = document["materials"]
    assert materials[0]["alphaMode"] == "BLEND"
    assert materials[0]["pbrMetallicRoughness"]["baseColorFactor"][3] == pytest.approx(0.4)
    assert "alphaMode" not in materials[1]
    for mesh, surface in zip(document["meshes"], surfaces, strict=True):
        primitive = mesh["primitives"][0]
        position = document["accessors"][primitive["attributes"]["POSITION"]]
        normal = document["accessors"][primitive["attributes"]["NORMAL"]]
        indices = document["accessors"][primitive["indices"]]
        assert position["count"] == normal["count"] == len(surface.positions)
        assert indices["count"] == surface.faces.size
        view = document["bufferViews"][indices["bufferView"]]
        stored = np.frombuffer(blob, np.uint32, count=indices["count"], offset=view["byteOffset"])
        assert stored.max() < position["count"]
    assert len(blob) == document["buffers"][0]["byteLength"]


def test_a_single_surface_stays_opaque():
    surface = Surface(np.zeros((3, 3), np.float32), np.zeros((3, 3), np.float32), np.zeros((1, 3), np.uint32), "#fff")
    assert with_nested_translucency([surface], [10])[0].opacity == 1.0
