"""The backend-independent pick sequence.

Stages (names as in srv/PickObject.srv `failed_stage`):
request -> transform -> planning_scene -> [candidate loop: pre_grasp, open_gripper,
approach] -> grasp -> lift -> (place -> release).

- Grasps arrive in the camera frame (any frame the backend can transform) and
  are tried in descending score order until one plans: a candidate whose TCP
  goals leave the workspace box, whose width exceeds the stroke, or whose
  pre-grasp / straight approach cannot be planned is skipped with its reason;
  when none plans the pick fails listing every reason.
- Safety: nothing moves when the planning-scene update failed; every TCP goal
  (pre-grasp, grasp, lift, place) must lie inside the preset's workspace box;
  after a gripper failure (controller error, or closing on nothing) the robot
  stops where it is and the failure is reported at that stage.
- Pose maths: the TCP goal is the grasp point moved `depth` along the approach
  (the fingertips reach `depth` past the grasp point, Grasp.msg) minus the
  preset's tcp_behind_fingertips; the pre-grasp is `pre_grasp_distance` back
  along the approach; the lift is straight up when the approach is more than
  60 deg from vertical, else back along the approach (VGN's rule; 'up' and
  'retreat' force one).
- Memory of failures: a grasp that was executed and then failed (closed on
  nothing, no single object held, slipped during the lift) is remembered in
  the planning frame; later picks try candidates within 2 cm and 30 deg of a
  remembered failure last (they stay available). A successful pick clears it.
"""
from __future__ import annotations

from dataclasses import dataclass, field
import time

import numpy as np
from scipy.spatial import ConvexHull, QhullError

from zerograsp_ros.errors import InputError
from zerograsp_ros.execution.backends import (
    CollisionBox,
    CollisionMesh,
    ExecutionBackend,
    ExecutionError,
)
from zerograsp_ros.execution.robot import RobotPreset
from zerograsp_ros.geometry.transforms import check_rigid, project_to_so3
from zerograsp_ros.grasp.representation import GraspSet, same_grasp_rotation

STAGES = ('request', 'perception', 'transform', 'planning_scene', 'pre_grasp', 'open_gripper',
          'approach', 'grasp', 'lift', 'place', 'release')
LIFT_MODES = ('auto', 'up', 'retreat')
# VGN: lift straight up when the approach is more than 60 deg from vertical.
VERTICAL_LIFT_LIMIT_DEG = 60.0


@dataclass
class PickConfig:
    pre_grasp_distance: float = 0.10   # back along the approach [m]
    lift_height: float = 0.10          # [m]
    lift_mode: str = 'auto'            # 'auto' | 'up' | 'retreat'
    width_margin: float = 0.02         # opening beyond the grasp width before the approach [m]
    grasp_effort: float = 40.0         # closing force limit [N]
    open_effort: float = 0.0           # opening force limit [N] (0 = backend default)
    min_held_width: float = 0.002      # closed below this = nothing between the fingers [m]
    max_candidates: int = 10           # grasps tried before giving up
    verify_hold_after_lift: bool = True
    place_pose: np.ndarray | None = None   # 4x4 TCP pose in the planning frame, None = keep
    retreat_after_place: float = 0.10  # back along the place approach after releasing [m]
    # A static scene gives the same top grasp again after a failure: try others first.
    avoid_failed_grasps: bool = True
    failed_grasp_distance: float = 0.02    # TCP distance to a failed grasp [m]
    failed_grasp_angle_deg: float = 30.0   # rotation angle (180 deg flip = same grasp)
    failed_grasp_memory: int = 20          # most recent failures remembered

    def validate(self) -> 'PickConfig':
        for name in ('pre_grasp_distance', 'lift_height', 'width_margin', 'grasp_effort',
                     'open_effort', 'min_held_width', 'retreat_after_place',
                     'failed_grasp_distance', 'failed_grasp_angle_deg'):
            value = getattr(self, name)
            if not (np.isfinite(value) and value >= 0.0):
                raise InputError(f'pick config: {name} must be finite and >= 0, got {value}')
        if self.lift_mode not in LIFT_MODES:
            raise InputError(f'pick config: lift_mode {self.lift_mode!r} not in {LIFT_MODES}')
        if self.failed_grasp_memory < 0:
            raise InputError(f'pick config: failed_grasp_memory must be >= 0, got '
                             f'{self.failed_grasp_memory}')
        if self.max_candidates < 1:
            raise InputError(f'pick config: max_candidates must be >= 1, got '
                             f'{self.max_candidates}')
        if self.place_pose is not None:
            self.place_pose = check_rigid(self.place_pose, 'place_pose')
        return self


@dataclass
class ReconstructedObject:
    """A reconstruction in the grasps' frame: mesh (preferred) and/or surface points."""

    object_id: int
    vertices: np.ndarray
    faces: np.ndarray
    points: np.ndarray | None = None


@dataclass
class PickTarget:
    grasps: GraspSet                    # candidates in `frame_id`
    frame_id: str
    objects: list[ReconstructedObject] = field(default_factory=list)
    object_id: int = -1                 # -1 = the best grasp of any object
    dry_run: bool = False


@dataclass
class StageReport:
    stage: str
    ok: bool
    message: str
    seconds: float


@dataclass
class PickResult:
    success: bool
    message: str
    failed_stage: str = ''
    planning_frame: str = ''
    grasp: GraspSet | None = None       # the executed (or planned) grasp, planning frame
    candidates_tried: int = 0
    stages: list[StageReport] = field(default_factory=list)
    object_held: bool = False


class PickFailure(Exception):
    """Ends the sequence at `stage` with `message`."""

    def __init__(self, stage: str, message: str):
        super().__init__(message)
        self.stage = stage


def lift_direction(approach: np.ndarray, mode: str = 'auto') -> np.ndarray:
    """Unit lift direction in the planning frame (z up) for an approach vector."""
    a = np.asarray(approach, dtype=np.float64)
    a = a / np.linalg.norm(a)
    up, back = np.array([0.0, 0.0, 1.0]), -a
    if mode == 'up':
        return up
    if mode == 'retreat':
        return back
    angle_from_down = np.degrees(np.arccos(np.clip(-a[2], -1.0, 1.0)))
    return up if angle_from_down > VERTICAL_LIFT_LIMIT_DEG else back


def grasp_waypoints(R: np.ndarray, t: np.ndarray, depth: float, robot: RobotPreset,
                    config: PickConfig) -> dict[str, np.ndarray]:
    """TCP-link goals (4x4, planning frame) for one grasp: pre_grasp, grasp, lift."""
    R = project_to_so3(R)
    approach = R[:, 0]
    T_grasp = np.eye(4)
    T_grasp[:3, :3] = R
    advance = float(depth) - robot.gripper.tcp_behind_fingertips
    T_grasp[:3, 3] = np.asarray(t, dtype=np.float64) + advance * approach
    T_grasp = T_grasp @ robot.grasp_to_tcp
    pre = T_grasp.copy()
    pre[:3, 3] -= config.pre_grasp_distance * approach
    lift = T_grasp.copy()
    lift[:3, 3] += config.lift_height * lift_direction(approach, config.lift_mode)
    return {'pre_grasp': pre, 'grasp': T_grasp, 'lift': lift}


def collision_mesh(obj: ReconstructedObject, T: np.ndarray) -> CollisionMesh:
    """The object's mesh (or the convex hull of its points) moved into the planning frame."""
    name = f'object_{int(obj.object_id)}'
    vertices = np.asarray(obj.vertices if obj.vertices is not None else np.zeros((0, 3)),
                          dtype=np.float64).reshape(-1, 3)
    faces = np.asarray(obj.faces if obj.faces is not None else np.zeros((0, 3)),
                       dtype=np.int64).reshape(-1, 3)
    if len(faces) < 4:
        points = np.asarray(obj.points if obj.points is not None else np.zeros((0, 3)),
                            dtype=np.float64).reshape(-1, 3)
        points = points[np.isfinite(points).all(1)]
        try:
            # No mesh came with the reconstruction: its points' hull is a safe (larger) obstacle.
            hull = ConvexHull(points)
        except (QhullError, ValueError) as exc:
            raise InputError(f'{name}: the reconstruction has neither a mesh nor enough '
                             f'surface points for a hull ({len(points)} points)') from exc
        vertices, faces = points, hull.simplices
    vertices = vertices @ T[:3, :3].T + T[:3, 3]
    return CollisionMesh(name, int(obj.object_id), vertices, faces)


# --------------------------------------------------------------------------- the sequence

class PickSequence:
    """Runs one pick on a backend; every stage reports success or its reason of failure."""

    def __init__(self, backend: ExecutionBackend, robot: RobotPreset,
                 config: PickConfig | None = None, table: CollisionBox | None = None,
                 on_attempt=None):
        self.backend = backend
        # on_attempt(grasp): called with each candidate (a 1-grasp GraspSet in the target's
        # frame) as its motion starts, so a view can highlight what the arm is doing.
        self.on_attempt = on_attempt
        self.robot = robot
        self.config = (config or PickConfig()).validate()
        self.table = table
        self._reports: list[StageReport] = []
        self._t0 = 0.0
        self._failed_grasps: list[np.ndarray] = []   # 4x4 grasp poses, planning frame
        self._executing: np.ndarray | None = None

    # ----------------------------------------------------------------- helpers
    def _report(self, stage: str, ok: bool, message: str) -> None:
        now = time.perf_counter()
        self._reports.append(StageReport(stage, ok, message, now - self._t0))
        self._t0 = now

    def _fail(self, stage: str, message: str) -> PickFailure:
        self._report(stage, False, message)
        return PickFailure(stage, message)

    def _check_workspace(self, poses: dict[str, np.ndarray]) -> str | None:
        for name, T in poses.items():
            if not self.robot.in_workspace(T[:3, 3]):
                return (f'{name} TCP {np.round(T[:3, 3], 3).tolist()} outside the workspace '
                        f'{list(self.robot.workspace_min)}..{list(self.robot.workspace_max)}')
        return None

    def _select_candidates(self, target: PickTarget) -> GraspSet:
        grasps = target.grasps
        if not grasps.finite_mask().all():
            bad = int(np.flatnonzero(~grasps.finite_mask())[0])
            raise self._fail('request', f'grasp {bad} has a NaN/inf pose, width or depth')
        for name, values in (('width', grasps.widths), ('depth', grasps.depths)):
            if (values < 0).any():     # Grasp.msg: both are distances >= 0
                bad = int(np.flatnonzero(values < 0)[0])
                raise self._fail('request', f'grasp {bad} has a negative {name} '
                                 f'({float(values[bad]):.4f} m); Grasp.msg {name} is >= 0')
        known = sorted(set(int(i) for i in grasps.object_ids)
                       | set(int(o.object_id) for o in target.objects))
        if target.object_id != -1:
            if target.object_id not in known:
                raise self._fail('request', f'unknown object id {target.object_id}; objects in '
                                 f'the scene: {known}')
            grasps = grasps.subset(grasps.object_ids == target.object_id)
            if len(grasps) == 0:
                raise self._fail('perception', f'no grasp was predicted for object '
                                 f'{target.object_id}')
        if len(grasps) == 0:
            raise self._fail('perception', 'no grasp candidates')
        self._report('request', True, f'{len(grasps)} candidate(s)')
        return grasps.sorted_by_score()

    def near_failed_grasp(self, grasps: GraspSet) -> np.ndarray:
        """Which grasps (planning frame) repeat a remembered failed grasp."""
        near = np.zeros(len(grasps), bool)
        cfg = self.config
        for F in self._failed_grasps:
            close = np.linalg.norm(grasps.translations - F[:3, 3], axis=1) \
                < cfg.failed_grasp_distance
            near |= close & same_grasp_rotation(grasps.rotations, F[:3, :3],
                                                cfg.failed_grasp_angle_deg)
        return near

    def forget_failed_grasps(self) -> None:
        self._failed_grasps.clear()

    def _update_scene(self, meshes: list[CollisionMesh], target_id: int) -> None:
        names = {m.object_id: m.name for m in meshes}
        try:
            self.backend.update_planning_scene(meshes, self.table, names.get(target_id))
        except (ExecutionError, InputError) as exc:
            raise self._fail('planning_scene', f'planning scene update failed, nothing moved: '
                             f'{exc}') from exc
        self._report('planning_scene', True, f'{len(meshes)} object(s), target '
                     f'{names.get(target_id, "none")}')

    def stages_so_far(self) -> list[StageReport]:
        return list(self._reports)

    # ----------------------------------------------------------------- run
    def run(self, target: PickTarget) -> PickResult:
        self._reports, self._t0 = [], time.perf_counter()
        self._executing = None
        result = PickResult(False, '', planning_frame=self.backend.planning_frame)
        self.backend.begin_pick()
        try:
            self._run(target, result)
        except PickFailure as failure:
            result.success, result.failed_stage = False, failure.stage
            result.message = str(failure)
            if failure.stage in ('grasp', 'lift') and self._executing is not None:
                keep = self.config.failed_grasp_memory
                self._failed_grasps = (self._failed_grasps + [self._executing])[-keep:] \
                    if keep else []
        else:
            if result.success and not target.dry_run:
                self.forget_failed_grasps()  # the scene changed
        result.stages = list(self._reports)
        return result

    def _run(self, target: PickTarget, result: PickResult) -> None:
        cfg, dry = self.config, target.dry_run
        if not target.frame_id:
            raise self._fail('request', 'the grasps carry no frame_id')
        candidates = self._select_candidates(target)
        if cfg.place_pose is not None:  # refuse an unreachable place before anything moves
            outside = self._check_workspace({'place': cfg.place_pose})
            if outside:
                raise self._fail('place', outside)

        try:
            T = check_rigid(self.backend.lookup_transform(self.backend.planning_frame,
                                                           target.frame_id),
                             f'transform {self.backend.planning_frame} <- {target.frame_id}')
        except (ExecutionError, InputError) as exc:
            raise self._fail('transform', str(exc)) from exc
        grasps = candidates.transformed(T)
        note = ''
        if cfg.avoid_failed_grasps and self._failed_grasps:
            near = self.near_failed_grasp(grasps)
            if near.any():
                grasps = grasps.subset(np.concatenate([np.flatnonzero(~near),
                                                       np.flatnonzero(near)]))
                note = (f'; {int(near.sum())} candidate(s) repeat an earlier failed grasp '
                        'and go last')
        grasps = grasps.subset(slice(0, cfg.max_candidates))
        self._report('transform', True,
                     f'{target.frame_id} -> {self.backend.planning_frame}{note}')

        try:
            meshes = [collision_mesh(o, T) for o in target.objects]
        except InputError as exc:
            raise self._fail('planning_scene', f'refusing to move: {exc}') from exc
        scene_target = None

        reasons: list[tuple[str, str]] = []
        chosen = None
        for i in range(len(grasps)):
            result.candidates_tried = i + 1
            obj_id = int(grasps.object_ids[i])
            label = f'candidate {i} (object {obj_id}, score {grasps.scores[i]:.3f})'
            width = float(grasps.widths[i])
            if width > self.robot.gripper.stroke + 1e-4:  # float32 widths round up
                reasons.append(('pre_grasp', f'{label}: width {width:.3f} m exceeds the '
                                f'stroke {self.robot.gripper.stroke} m'))
                continue
            poses = grasp_waypoints(grasps.rotations[i], grasps.translations[i],
                                    float(grasps.depths[i]), self.robot, cfg)
            outside = self._check_workspace(poses)
            if outside:
                reasons.append(('pre_grasp', f'{label}: {outside}'))
                continue
            if scene_target != obj_id:  # gripper contact is allowed with this target only
                self._update_scene(meshes, obj_id)
                scene_target = obj_id
            if self.on_attempt is not None:
                self.on_attempt(grasps.subset([i]).transformed(np.linalg.inv(T)))
            motion = self.backend.move(poses['pre_grasp'], straight_line=False, dry_run=dry)
            if not motion.planned:
                reasons.append(('pre_grasp', f'{label}: pre-grasp not planned: '
                                f'{motion.message}'))
                continue
            if not motion.ok:
                raise self._fail('pre_grasp', f'{label}: moving to the pre-grasp failed: '
                                 f'{motion.message}')
            self._report('pre_grasp', True, label)
            if not dry:
                opening = min(width + cfg.width_margin, self.robot.gripper.stroke)
                g = self.backend.gripper(opening, cfg.open_effort)
                if not g.ok:
                    raise self._fail('open_gripper', f'gripper failed to open to '
                                     f'{opening:.3f} m: {g.message}; stopped')
                self._report('open_gripper', True, f'opened to {g.width:.3f} m')
            motion = self.backend.move(poses['grasp'], straight_line=True, dry_run=dry)
            if not motion.planned:
                reasons.append(('approach', f'{label}: straight approach not planned: '
                                f'{motion.message}'))
                continue
            if not motion.ok:
                raise self._fail('approach', f'{label}: approach failed: {motion.message}')
            self._report('approach', True, label)
            chosen = (i, poses, obj_id)
            break

        if chosen is None:
            stage = reasons[-1][0] if reasons else 'pre_grasp'
            raise self._fail(stage, f'no grasp candidate could be executed ({len(reasons)} '
                             f'tried): ' + '; '.join(r for _, r in reasons))
        i, poses, obj_id = chosen
        result.grasp = grasps.subset([i])
        if not dry:
            self._executing = np.eye(4)
            self._executing[:3, :3] = grasps.rotations[i]
            self._executing[:3, 3] = grasps.translations[i]
        name = f'object_{obj_id}'

        if dry:
            for stage, pose in self._after_grasp_goals(poses):
                motion = self.backend.move(pose, straight_line=(stage != 'place'), dry_run=True)
                if not motion.ok:
                    raise self._fail(stage, f'dry run: {stage} not planned: {motion.message}')
                self._report(stage, True, 'planned (dry run)')
            result.success = True
            result.message = (f'dry run: every stage planned for candidate {i} of object '
                              f'{obj_id}; nothing moved')
            return

        g = self.backend.gripper(-1.0, cfg.grasp_effort)
        if not g.ok:
            raise self._fail('grasp', f'gripper reported a failure while closing: {g.message}; '
                             'stopped, no further motion')
        if np.isfinite(g.width) and g.width < cfg.min_held_width:
            raise self._fail('grasp', f'gripper closed on nothing (opening {g.width:.4f} m); '
                             'stopped, no further motion')
        # Touching more than one object right after closing can still end in a hold once
        # lifted; without the post-lift check a doubtful hold is a failure here.
        if g.object_held is False and (not cfg.verify_hold_after_lift
                                       or not np.isfinite(g.width)):
            raise self._fail('grasp', f'the fingers do not hold one object (opening '
                             f'{g.width:.4f} m); stopped, no further motion')
        try:
            self.backend.attach(name)
        except ExecutionError as exc:
            raise self._fail('grasp', f'attaching {name} in the planning scene failed: '
                             f'{exc}; stopped') from exc
        self._report('grasp', True, f'closed at {g.width:.4f} m'
                     + ('' if g.object_held is not False else ', hold checked after the lift'))

        motion = self.backend.move(poses['lift'], straight_line=True, dry_run=False)
        if not motion.ok:
            raise self._fail('lift', f'lift failed: {motion.message}')
        if cfg.verify_hold_after_lift:
            g = self.backend.gripper(-1.0, cfg.grasp_effort)
            if not g.ok:
                raise self._fail('lift', f'gripper reported a failure after the lift: '
                                 f'{g.message}; stopped')
            if g.object_held is False or (np.isfinite(g.width) and g.width < cfg.min_held_width):
                raise self._fail('lift', f'object {obj_id} slipped out during the lift '
                                 f'(opening {g.width:.4f} m)')
        result.object_held = True
        self._report('lift', True, f'lifted {cfg.lift_height:.3f} m, object held')

        if cfg.place_pose is not None:
            (_, place), (_, retreat) = self._after_grasp_goals(poses)[1:]
            motion = self.backend.move(place, straight_line=False, dry_run=False)
            if not motion.ok:
                raise self._fail('place', f'moving to the place pose failed: {motion.message}')
            self._report('place', True, 'at the place pose')
            g = self.backend.gripper(self.robot.gripper.stroke, cfg.open_effort)
            if not g.ok:
                raise self._fail('release', f'gripper failed to open: {g.message}; stopped')
            try:
                self.backend.detach(name)
            except ExecutionError as exc:
                raise self._fail('release', f'detaching {name} failed: {exc}') from exc
            result.object_held = False
            motion = self.backend.move(retreat, straight_line=True, dry_run=False)
            if not motion.ok:
                raise self._fail('release', f'retreat after release failed: {motion.message}')
            self._report('release', True, 'released and retreated')
        result.success = True
        result.message = (f'picked object {obj_id} with candidate {i} '
                          f'(score {grasps.scores[i]:.3f})'
                          + (' and placed it' if cfg.place_pose is not None else ''))

    def _after_grasp_goals(self, poses: dict[str, np.ndarray]) -> list[tuple[str, np.ndarray]]:
        goals = [('lift', poses['lift'])]
        place = self.config.place_pose
        if place is not None:
            outside = self._check_workspace({'place': place})
            if outside:
                raise self._fail('place', outside)
            retreat = place.copy()
            retreat[:3, 3] -= self.config.retreat_after_place * (
                place[:3, :3] @ self.robot.grasp_to_tcp[:3, :3].T)[:, 0]
            goals += [('place', place), ('release', retreat)]
        return goals
