"""The simulated cell's configuration: config/sim_cell.yaml -> SimCellConfig, and its TF frames.

Shared by the cell itself (zerograsp_ros.sim.cell), its ROS node and client, the
camera node's depth tare and the benchmarks, none of which need pybullet for it.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml

from zerograsp_ros.errors import InputError
from zerograsp_ros.geometry.camera import CameraIntrinsics
from zerograsp_ros.geometry.transforms import check_rigid
from zerograsp_ros.resources import package_file


def _matrix16(raw, key: str) -> np.ndarray:
    arr = np.asarray(raw, dtype=np.float64).reshape(-1)
    if arr.shape != (16,) or not np.isfinite(arr).all():
        raise InputError(f'sim cell config: {key} must be 16 finite numbers (4x4 row-major)')
    return check_rigid(arr.reshape(4, 4), f'sim cell config: {key}')


@dataclass
class SimCellConfig:
    """Parameters of the cell (defaults = config/sim_cell.yaml)."""

    intrinsics: CameraIntrinsics = field(default_factory=CameraIntrinsics.d435)
    T_world_base: np.ndarray = field(default_factory=lambda: _translation([-0.55, 0, 0]))
    T_base_camera: np.ndarray = field(default_factory=lambda: np.eye(4))
    base_frame: str = 'panda_link0'
    camera_frame: str = 'camera_color_optical_frame'
    depth_noise: bool = True
    seed: int = 0
    num_objects: int = 5
    layout: str = 'pile'
    split: str = 'test'
    grip_force: float = 40.0
    tcp_speed: float = 0.15
    check_reachability: bool = True
    parameters: dict = field(default_factory=dict)   # the raw ros__parameters

    @property
    def T_world_camera(self) -> np.ndarray:
        return self.T_world_base @ self.T_base_camera


def _translation(xyz) -> np.ndarray:
    T = np.eye(4)
    T[:3, 3] = xyz
    return T


def sim_cell_config_from_parameters(params: dict) -> SimCellConfig:
    """Build the config from a ros__parameters mapping (missing keys keep defaults)."""
    try:
        intr = CameraIntrinsics(float(params.get('fx', 615.0)), float(params.get('fy', 615.0)),
                                float(params.get('cx', 320.0)), float(params.get('cy', 240.0)),
                                int(params.get('image_width', 640)),
                                int(params.get('image_height', 480)))
        intr.validate()
        cfg = SimCellConfig(
            intrinsics=intr,
            T_world_base=_matrix16(params['T_world_base'], 'T_world_base')
            if 'T_world_base' in params else _translation([-0.55, 0, 0]),
            T_base_camera=_matrix16(params['T_base_camera'], 'T_base_camera')
            if 'T_base_camera' in params else np.eye(4),
            base_frame=str(params.get('base_frame', 'panda_link0')),
            camera_frame=str(params.get('camera_frame', 'camera_color_optical_frame')),
            depth_noise=bool(params.get('depth_noise', True)),
            seed=int(params.get('seed', 0)), num_objects=int(params.get('num_objects', 5)),
            layout=str(params.get('layout', 'pile')), split=str(params.get('split', 'test')),
            grip_force=float(params.get('grip_force', 40.0)),
            tcp_speed=float(params.get('tcp_speed', 0.15)),
            check_reachability=bool(params.get('check_reachability', True)),
            parameters=dict(params))
    except (TypeError, ValueError) as exc:
        raise InputError(f'sim cell config has a malformed value: {exc}') from exc
    if cfg.tcp_speed <= 0 or cfg.grip_force <= 0:
        raise InputError('sim cell config: tcp_speed and grip_force must be positive')
    return cfg


def load_sim_cell_config(path: str | Path | None = None) -> SimCellConfig:
    """Read config/sim_cell.yaml (or `path`): the node's ros__parameters."""
    p = Path(path) if path is not None else package_file('config', 'sim_cell.yaml')
    if not p.is_file():
        raise InputError(f'sim cell config {p} does not exist')
    try:
        data = yaml.safe_load(p.read_text())
        params = data['sim_cell_node']['ros__parameters']
    except (yaml.YAMLError, KeyError, TypeError) as exc:
        raise InputError(f'sim cell config {p} lacks sim_cell_node.ros__parameters: {exc}') \
            from exc
    return sim_cell_config_from_parameters(params)


WORLD_FRAME = 'world'


def cell_static_transforms(config: SimCellConfig, world_frame: str = WORLD_FRAME
                           ) -> list[tuple[str, str, np.ndarray]]:
    """The cell's fixed frames as (parent, child, T_parent_child): world -> base -> camera.

    The camera optical frame (the images' frame_id) hangs directly under the robot base:
    no RealSense driver runs in the sim to publish camera_link -> optical frame. A base
    frame named like the world frame is allowed with an identity T_world_base only (that
    transform is then left out, a frame cannot be its own parent).
    """
    world, base, camera = world_frame, config.base_frame, config.camera_frame
    for what, name in (('world', world), ('base', base), ('camera', camera)):
        if not name or name != name.strip() or name.startswith('/'):
            raise InputError(f"sim cell {what} frame {name!r} is not a valid tf2 frame id "
                             "(empty, surrounding spaces or a leading '/')")
    if camera in (world, base):
        raise InputError(f"sim cell camera frame '{camera}' must differ from the world frame "
                         f"'{world}' and the base frame '{base}'")
    transforms = []
    if base == world:
        if not np.allclose(config.T_world_base, np.eye(4), atol=1e-9):
            raise InputError(f"sim cell base frame is named '{world}' like the world frame "
                             'but T_world_base is not the identity')
    else:
        transforms.append((world, base, config.T_world_base.copy()))
    transforms.append((base, camera, config.T_base_camera.copy()))
    return transforms
