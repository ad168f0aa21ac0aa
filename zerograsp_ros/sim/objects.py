"""The object catalogue of the simulated scenes: which objects exist, their split, shape and size.

Objects are unions of convex parts (pybullet's random_urdfs are made that way; named
meshes use their V-HACD parts; primitives are one part). The same parts are used for
physics (a compound of convex hulls in pybullet, written by `write_object_urdf`) and for
rendering/labels, so what the camera sees is exactly what the gripper touches.
Splits are by object, so test objects are never seen in training.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
import hashlib
import os
from pathlib import Path
import tempfile

import numpy as np
import trimesh

from zerograsp_ros.errors import InputError

BROKEN_RANDOM_URDFS = {168}    # all-NaN vertices in pybullet_data
NAMED_MESHES = {               # name -> (collision parts obj relative to pybullet_data, split)
    'duck': ('duck_vhacd.obj', 'train'),
    'teddy': ('teddy2_VHACD_CHs.obj', 'train'),
    'lego': ('lego/lego_vhacd.obj', 'train'),
    'mug': ('objects/mug_col.obj', 'val'),
    'bunny': ('bunny.obj', 'test'),
    'jenga': ('jenga/jenga.obj', 'test'),
}
# Parametric primitive families appear in every split with fresh random dimensions;
# 'plate' and 'wide_box' are flat/wide so a trivial top-down heuristic cannot saturate.
PRIMITIVES = ('box', 'cylinder', 'sphere', 'plate', 'wide_box')
SPLITS = ('train', 'val', 'test')


@dataclass
class SceneObject:
    object_id: int             # 1..N, = value in rendered instance label images
    name: str                  # 'urdf_042', 'box', 'cylinder', 'plate', 'duck', ...
    mesh: trimesh.Trimesh      # object frame, metres, scaled: concatenation of closed convex parts
    pose: np.ndarray           # 4x4 object -> world, after settling
    urdf_path: str | None      # generated URDF (compound of the convex parts) used in pybullet
    scale: float               # factor applied to the source mesh (1.0 for primitives)
    parts: list = field(default_factory=list)   # convex parts (trimesh), object frame
    color: tuple = (0.5, 0.5, 0.5)              # RGB in [0, 1] for rendering
    mass: float = 0.1

    def mesh_world(self) -> trimesh.Trimesh:
        m = self.mesh.copy()
        m.apply_transform(self.pose)
        return m

    def contains(self, points_world: np.ndarray) -> np.ndarray:
        """Which world points lie inside the object (inside any convex part)."""
        local = (np.asarray(points_world, dtype=np.float64) - self.pose[:3, 3]) @ self.pose[:3, :3]
        inside = np.zeros(len(local), dtype=bool)
        for part in self.parts:
            # Half-space test against each face plane of the convex part.
            normals, origins = part.face_normals, part.triangles[:, 0]
            d = np.einsum('nfk,fk->nf', local[:, None, :] - origins[None], normals)
            inside |= (d <= 1e-6).all(axis=1)
        return inside


# ----------------------------------------------------------------------------- object sets

def _pybullet_data() -> Path:
    import pybullet_data
    return Path(pybullet_data.getDataPath())


def object_split(split: str) -> list[str]:
    """Object names of a split; disjoint by mesh object, primitives shared as families."""
    if split not in SPLITS:
        raise InputError(f"unknown object split '{split}': expected one of {SPLITS}")
    bucket = {'train': range(0, 8), 'val': (8,), 'test': (9,)}[split]
    names = [f'urdf_{i:03d}' for i in range(1000)
             if i % 10 in bucket and i not in BROKEN_RANDOM_URDFS]
    names += [n for n, (_, s) in NAMED_MESHES.items() if s == split]
    return names + list(PRIMITIVES)


@lru_cache(maxsize=256)
def _source_parts(name: str) -> tuple[tuple[np.ndarray, ...], float]:
    """Convex parts (vertices, source units) of a mesh object and its default scale."""
    root = _pybullet_data()
    if name.startswith('urdf_'):
        idx = int(name[5:])
        path, scale = root / 'random_urdfs' / f'{idx:03d}' / f'{idx:03d}.obj', 0.015
    elif name in NAMED_MESHES:
        path, scale = root / NAMED_MESHES[name][0], None
    else:
        raise InputError(f"unknown object '{name}'")
    if not path.is_file():
        raise InputError(f'object mesh {path} is missing from pybullet_data')
    verts = tuple(v for v in _obj_parts(path) if len(v) >= 4)
    if any(not np.isfinite(v).all() for v in verts):
        raise InputError(f'object mesh {path} has non-finite vertices')
    if not verts:
        raise InputError(f'object mesh {path} has no usable parts')
    return verts, (scale if scale is not None else np.nan)


def _obj_parts(path: Path) -> list[np.ndarray]:
    """Vertices of each 'o' group of an OBJ file (the convex parts pybullet builds).

    Hand-parsed because trimesh merges the groups into one mesh; a file with a
    single group is one part.
    """
    vertices, groups, current = [], [], None
    for line in path.read_text(errors='replace').splitlines():
        if line.startswith('v '):
            vertices.append([float(x) for x in line.split()[1:4]])
        elif line.startswith('o ') or (line.startswith('f ') and current is None):
            current = set()
            groups.append(current)
        if line.startswith('f '):
            for tok in line.split()[1:]:
                i = int(tok.split('/')[0])
                current.add(i - 1 if i > 0 else len(vertices) + i)
    v = np.asarray(vertices, dtype=np.float64)
    return [v[sorted(g)] for g in groups if g]


def _hull(vertices: np.ndarray) -> trimesh.Trimesh:
    return trimesh.convex.convex_hull(vertices)


def _make_object_parts(name: str, rng: np.random.Generator,
                       size_levels: int | None = None) -> tuple[list, float]:
    """Convex parts in metres for one object (random size), and the scale used.

    size_levels=None draws sizes continuously (the benchmark's scenes). A count snaps
    every drawn size to that many evenly spaced levels of its range, after the same
    draws, so the random stream and everything else in the scene stay the same while
    each object mesh repeats across scenes (the data generator's per-mesh label cache).
    """
    def draw(low, high):
        return _snap(rng.uniform(low, high), low, high, size_levels)

    if name == 'box':
        return [trimesh.creation.box(draw([0.03, 0.03, 0.03], [0.07, 0.09, 0.10]))], 1.0
    if name == 'wide_box':
        return [trimesh.creation.box([draw(0.10, 0.14), draw(0.06, 0.08),
                                      draw(0.04, 0.07)])], 1.0
    if name == 'plate':
        return [trimesh.creation.cylinder(radius=draw(0.05, 0.075),
                                          height=draw(0.012, 0.025), sections=32)], 1.0
    if name == 'cylinder':
        return [trimesh.creation.cylinder(radius=draw(0.02, 0.04),
                                          height=draw(0.05, 0.14), sections=24)], 1.0
    if name == 'sphere':
        return [trimesh.creation.icosphere(subdivisions=2, radius=draw(0.025, 0.04))], 1.0
    verts, default_scale = _source_parts(name)
    extent = np.ptp(np.concatenate(verts), axis=0)
    if np.isfinite(default_scale):
        scale = default_scale * draw(1.0, 1.2)
    else:
        scale = draw(0.08, 0.13) / extent.max()
    scale = min(scale, 0.15 / extent.max())   # sizes stay within 2-15 cm
    return [_hull(v * scale) for v in verts], float(scale)


def _snap(value, low, high, levels: int | None):
    """value unchanged (levels None), else the nearest of `levels` evenly spaced levels."""
    if levels is None:
        return value
    low, high = np.asarray(low, dtype=np.float64), np.asarray(high, dtype=np.float64)
    if levels == 1:
        return (low + high) / 2.0
    step = (high - low) / (levels - 1)
    return low + np.round((np.asarray(value) - low) / step) * step


def build_object(object_id: int, name: str, rng: np.random.Generator,
                  size_levels: int | None = None) -> SceneObject:
    parts, scale = _make_object_parts(name, rng, size_levels)
    # Recentre on the bounding-box centre: pybullet puts the centre of mass at the link origin.
    all_v = np.concatenate([p.vertices for p in parts])
    centre = (all_v.min(0) + all_v.max(0)) / 2
    parts = [p.copy() for p in parts]
    for p in parts:
        p.apply_translation(-centre)
    mesh = trimesh.util.concatenate(parts)
    with np.errstate(invalid='ignore', divide='ignore'):   # flat parts have zero volume
        volume = sum(max(float(np.nan_to_num(p.volume)), 1e-7) for p in parts)
    mass = float(np.clip(volume * 600.0, 0.03, 0.4))   # light household density
    color = tuple(float(c) for c in rng.uniform(0.15, 0.95, size=3))
    return SceneObject(object_id=object_id, name=name, mesh=mesh, pose=np.eye(4), urdf_path=None,
                       scale=scale, parts=parts, color=color, mass=mass)


def _mesh_cache_dir() -> Path:
    d = Path(os.environ.get('ZEROGRASP_SIM_CACHE', Path(tempfile.gettempdir()) / 'zerograsp_sim'))
    d.mkdir(parents=True, exist_ok=True)
    return d


def write_object_urdf(obj: SceneObject) -> str:
    """Write (once, content-addressed) the object's parts OBJ and URDF; returns the URDF path."""
    lines = []
    offset = 1
    for i, p in enumerate(obj.parts):
        lines.append(f'o part{i}')
        lines += [f'v {x:.6f} {y:.6f} {z:.6f}' for x, y, z in p.vertices]
        lines += [f'f {a + offset} {b + offset} {c + offset}' for a, b, c in p.faces]
        offset += len(p.vertices)
    obj_text = '\n'.join(lines) + '\n'
    key = hashlib.sha1(f'{obj_text}{obj.mass:.5f}'.encode()).hexdigest()[:16]
    d = _mesh_cache_dir()
    obj_path, urdf_path = d / f'{key}.obj', d / f'{key}.urdf'
    if not urdf_path.is_file():
        tmp = obj_path.with_suffix(f'.{os.getpid()}.tmp')
        tmp.write_text(obj_text)
        os.replace(tmp, obj_path)
        urdf = f"""<?xml version="1.0"?>
<robot name="{obj.name}">
  <link name="body">
    <contact><lateral_friction value="0.8"/><rolling_friction value="0.0005"/>
      <spinning_friction value="0.001"/></contact>
    <inertial><origin xyz="0 0 0" rpy="0 0 0"/><mass value="{obj.mass:.5f}"/>
      <inertia ixx="1e-4" ixy="0" ixz="0" iyy="1e-4" iyz="0" izz="1e-4"/></inertial>
    <visual><geometry><mesh filename="{obj_path.name}"/></geometry>
      <material name="c"><color rgba="{obj.color[0]:.3f} {obj.color[1]:.3f} {obj.color[2]:.3f} 1"/>
      </material></visual>
    <collision><geometry><mesh filename="{obj_path.name}"/></geometry></collision>
  </link>
</robot>
"""
        tmp = urdf_path.with_suffix(f'.{os.getpid()}.tmp')
        tmp.write_text(urdf)
        os.replace(tmp, urdf_path)
    return str(urdf_path)
