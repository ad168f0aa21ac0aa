"""The interface every execution backend implements, and the data it exchanges.

All poses are 4x4 homogeneous matrices of the TCP link in the backend's
planning frame (`planning_frame`, the robot base); the pick sequence does the
frame maths, the backends only plan, move, grip and keep the planning scene.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
import threading

import numpy as np

from zerograsp_ros.errors import InputError


class ExecutionError(RuntimeError):
    """A backend could not do what was asked (planning scene, controller, transform)."""


@dataclass
class CollisionMesh:
    """One reconstructed object as a collision mesh in the planning frame."""

    name: str                 # collision object id, e.g. 'object_3'
    object_id: int
    vertices: np.ndarray      # (V, 3) float64, planning frame [m]
    faces: np.ndarray         # (F, 3) int

    def __post_init__(self):
        self.vertices = np.asarray(self.vertices, dtype=np.float64).reshape(-1, 3)
        self.faces = np.asarray(self.faces, dtype=np.int64).reshape(-1, 3)
        if len(self.vertices) < 4 or len(self.faces) < 4:
            raise InputError(f'{self.name}: a collision mesh needs at least 4 vertices and '
                             f'4 triangles, got {len(self.vertices)} and {len(self.faces)}')
        if not np.isfinite(self.vertices).all():
            raise InputError(f'{self.name}: collision mesh has NaN/inf vertices')
        if self.faces.min() < 0 or self.faces.max() >= len(self.vertices):
            raise InputError(f'{self.name}: collision mesh face index out of range')


@dataclass
class CollisionBox:
    """A box obstacle (the table): full edge lengths and the centre pose in the planning frame."""

    name: str
    size: np.ndarray          # (3,) [m]
    pose: np.ndarray          # 4x4 centre pose


@dataclass
class MotionResult:
    ok: bool
    planned: bool             # False = no plan found (the next candidate may do); True + not ok
    message: str = ''         # = planned but execution failed (stop)
    reached: np.ndarray | None = None   # TCP pose reached / planned to, when known


@dataclass
class GripperResult:
    ok: bool                  # the command itself succeeded (controller did not abort)
    width: float              # measured opening after the command [m] (nan when unknown)
    object_held: bool | None  # None when the gripper cannot tell
    message: str = ''


class ExecutionBackend(ABC):
    """Plans and moves the TCP, drives the gripper and maintains the planning scene."""

    planning_frame: str = 'base'

    @abstractmethod
    def lookup_transform(self, target_frame: str, source_frame: str) -> np.ndarray:
        """4x4 T_target_source (maps source-frame points into target_frame); ExecutionError."""

    @abstractmethod
    def update_planning_scene(self, objects: list[CollisionMesh], table: CollisionBox | None,
                              target: str | None) -> None:
        """Replace the scene's objects; allow gripper contact with `target` only.

        Raises ExecutionError when the scene could not be updated (then nothing may move).
        """

    @abstractmethod
    def move(self, T_base_tcp: np.ndarray, straight_line: bool, dry_run: bool) -> MotionResult:
        """Plan (and unless dry_run execute) a TCP motion; straight_line = Cartesian line."""

    @abstractmethod
    def gripper(self, width: float, max_effort: float) -> GripperResult:
        """Open to `width` [m]; a negative width closes until contact (or fully).

        Never called on a dry run (the pick sequence plans arm motions only).
        """

    @abstractmethod
    def attach(self, object_name: str) -> None:
        """Attach the grasped object to the gripper in the planning scene."""

    @abstractmethod
    def detach(self, object_name: str) -> None:
        """Detach (release) the object in the planning scene."""

    def begin_pick(self) -> None:  # noqa: B027 - optional hook
        """A new pick starts: forget per-pick state (e.g. a dry run's virtual start state)."""

    def close(self) -> None:  # noqa: B027 - optional hook, most backends hold nothing
        """Release resources (clients, threads)."""


def wait_for_future(future, timeout: float, what: str):
    """Block this thread until an rclpy future completes (the executor spins elsewhere)."""
    done = threading.Event()
    future.add_done_callback(lambda _f: done.set())
    if not done.wait(timeout):
        future.cancel()
        raise ExecutionError(f'{what}: no answer within {timeout:.1f} s')
    if future.exception() is not None:
        raise ExecutionError(f'{what}: {future.exception()}')
    return future.result()
