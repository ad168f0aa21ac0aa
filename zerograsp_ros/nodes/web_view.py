"""Web view node: the live scene in any browser, offline, built on viser.

Subscribes to what visualization_node draws for RViz and shows it at
http://<host>:<port> (localhost only by default):
- each object's reconstructed mesh in its colour (its surface points where it has no mesh);
- the visible point cloud of the latest camera frame (every `cloud_stride`-th pixel,
  refreshed at most every `cloud_period` s) and the table fitted to it;
- the grasps as boxes of the 2F-85 model (grasp/gripper.py), coloured by score from red
  to green; the one `/pick` is executing in blue (`zerograsp/executed_grasp`).
Controls: a score threshold, show/hide per object, buttons that call `/predict_grasps`
and `/pick` (dry run).

Fast update path: grasps are drawn as instances of one cube (one message, numpy only),
meshes are read from the message with attrgetter and re-sent only when they changed.
viser serves its bundled web client itself: nothing is fetched from the internet.
"""
from __future__ import annotations

from operator import attrgetter
import sys
import threading
import time
import zlib

import numpy as np
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup, ReentrantCallbackGroup
from rclpy.node import Node

from zerograsp_ros.errors import InputError
from zerograsp_ros.grasp import DEFAULT_GRIPPER
from zerograsp_ros.grasp.gripper import GRIPPER_PRESETS, gripper_preset
from zerograsp_ros.msg import GraspArray, SceneReconstruction
from zerograsp_ros.msg import RGBDFrame as RGBDFrameMsg
from zerograsp_ros.nodes.common import (
    EXECUTED_GRASP_TOPIC,
    FRAME_QOS,
    GRASPS_TOPIC,
    LATCHED_QOS,
    PREDICT_SERVICE,
    RECONSTRUCTION_TOPIC,
    RGBD_FRAME_TOPIC,
    Param,
    declare_params,
    positive,
)
from zerograsp_ros.nodes.conversions import SURFACE_FIELDS, cloud_to_points, msg_to_grasps
from zerograsp_ros.perception import scene_view

_XYZ = attrgetter('x', 'y', 'z')
_TRIANGLE = attrgetter('vertex_indices')
TABLE_REFIT_PERIOD = 10.0   # [s] RANSAC on the visible cloud at most this often

PARAMETERS = (
    Param('host', '127.0.0.1', 'Address the web view listens on (127.0.0.1 = this machine '
          'only; 0.0.0.0 = every interface, no authentication)'),
    Param('port', 8080, 'TCP port of the web view (0 = any free port; a busy port moves to '
          'the next free one)', lambda v: 0 <= v <= 65535, 'an integer in [0, 65535]'),
    Param('max_grasps', 10, 'Grasps drawn (best first)', lambda v: v >= 0,
          'an integer >= 0'),
    Param('score_threshold', 0.0, 'Initial score threshold: lower-scored grasps are hidden',
          lambda v: 0.0 <= v <= 1.0, 'a number in [0, 1]'),
    Param('mesh_opacity', 0.85, 'Opacity of the meshes', lambda v: 0.0 < v <= 1.0,
          'a number in (0, 1]'),
    Param('cloud_stride', 5, 'Visible cloud: every n-th pixel in each direction',
          lambda v: v >= 1, 'an integer >= 1'),
    Param('cloud_period', 1.0, 'Visible cloud and table: refreshed at most this often [s]',
          positive, 'a number > 0'),
    Param('point_size', 0.002, 'Point size [m]', positive, 'a number > 0'),
    Param('gripper', DEFAULT_GRIPPER, 'Gripper model the grasps are drawn with',
          lambda v: v in GRIPPER_PRESETS, f'one of {sorted(GRIPPER_PRESETS)}'),
)


def mesh_arrays(msg) -> tuple[np.ndarray, np.ndarray]:
    """shape_msgs/Mesh -> vertices (V, 3) float32, faces (F, 3) uint32 (InputError if broken)."""
    vertices = np.array(list(map(_XYZ, msg.vertices)), dtype=np.float32).reshape(-1, 3)
    faces = np.array(list(map(_TRIANGLE, msg.triangles)), dtype=np.uint32).reshape(-1, 3)
    if len(faces) and int(faces.max()) >= len(vertices):
        raise InputError('mesh face index out of range')
    if not np.isfinite(vertices).all():
        raise InputError('mesh has NaN/inf vertices')
    return vertices, faces


class WebViewNode(Node):
    def __init__(self, **kwargs):
        super().__init__('web_view', **kwargs)
        values = declare_params(self, PARAMETERS)
        host, port = values['host'], values['port']
        self.max_grasps = values['max_grasps']
        self.threshold = values['score_threshold']
        self.mesh_opacity = values['mesh_opacity']
        self.cloud_stride = values['cloud_stride']
        self.cloud_period = values['cloud_period']
        self.point_size = values['point_size']
        self.gripper = gripper_preset(values['gripper'])

        try:
            import viser
        except ImportError as exc:
            raise ImportError(f'web_view needs the viser package ({exc}); install it with '
                              '`pip install -r requirements/core.txt`') from exc

        self.server = viser.ViserServer(host=host, port=int(port), verbose=False)
        self.url = f'http://{host}:{self.server.get_port()}'
        self.server.gui.configure_theme(control_width='medium')
        self.server.scene.set_up_direction('-y')   # camera optical frame: y points down
        cam = self.server.initial_camera
        cam.position, cam.look_at, cam.up = (0.0, 0.0, -0.05), (0.0, 0.0, 0.6), (0.0, -1.0, 0.0)

        self.lock = threading.RLock()
        self.grasps = None                # GraspSet of the latest GraspArray
        self.executed = None              # GraspSet (one grasp) /pick is executing
        self.objects: dict[int, dict] = {}  # id -> {'digest', 'handle', 'checkbox'}
        self.latest_frame: RGBDFrameMsg | None = None
        self.frame_drawn_stamp = None
        self.frame_digest = None
        self.table_fitted = -float('inf')
        self.updates = 0                  # scene updates sent (grasps or reconstruction)
        self.last_update = {}             # what -> time.time() of its last upload
        self._grasp_handle = None
        self._executed_handle = None
        self._cube = scene_view.unit_cube()
        self._camera_placed = False
        self._shown = 0
        self._build_gui()

        self.client_group = ReentrantCallbackGroup()
        from zerograsp_ros.srv import PickObject, PredictGrasps

        self.predict_client = self.create_client(PredictGrasps, PREDICT_SERVICE,
                                                 callback_group=self.client_group)
        self.pick_client = self.create_client(PickObject, 'pick',
                                              callback_group=self.client_group)
        self.create_subscription(GraspArray, GRASPS_TOPIC, self._on_grasps, LATCHED_QOS)
        self.create_subscription(SceneReconstruction, RECONSTRUCTION_TOPIC, self._on_scene,
                                 LATCHED_QOS)
        self.create_subscription(GraspArray, EXECUTED_GRASP_TOPIC, self._on_executed,
                                 LATCHED_QOS)
        self.create_subscription(RGBDFrameMsg, RGBD_FRAME_TOPIC, self._on_frame, FRAME_QOS)
        self.create_timer(self.cloud_period, self._draw_cloud,
                          callback_group=MutuallyExclusiveCallbackGroup())
        self.get_logger().info(f'web view at {self.url} (open it in a browser)')
        print(f'[web_view] open {self.url} in a browser', flush=True)

    # ----------------------------------------------------------------- GUI
    def _build_gui(self):
        gui = self.server.gui
        gui.add_markdown('**zerograsp_ros** live view (camera frame)')
        self.status = gui.add_markdown('waiting for `/predict_grasps` results ...')
        self.answer = gui.add_markdown(' ')   # the last button's answer
        self.slider = gui.add_slider('Score threshold', min=0.0, max=1.0, step=0.001,
                                     initial_value=float(self.threshold))
        self.slider.on_update(lambda _: self._draw_grasps())
        self.show_grasps = gui.add_checkbox('Grasps', initial_value=True)
        self.show_grasps.on_update(lambda _: self._draw_grasps())
        self.show_cloud = gui.add_checkbox('Visible cloud', initial_value=True)
        self.show_cloud.on_update(lambda _: self._set_visible('/visible_cloud',
                                                              self.show_cloud.value))
        self.objects_folder = gui.add_folder('Objects')
        self.predict_button = gui.add_button('Predict grasps')
        self.predict_button.on_click(lambda _: self.request_prediction())
        self.pick_button = gui.add_button('Pick (dry run)')
        self.pick_button.on_click(lambda _: self.request_dry_run_pick())

    def _set_visible(self, name: str, visible: bool):
        handle = self._scene_handles().get(name)
        if handle is not None:
            handle.visible = visible

    def _scene_handles(self) -> dict:
        return {'/visible_cloud': getattr(self, '_cloud_handle', None),
                '/table': getattr(self, '_table_handle', None)}

    def _say(self, text: str):
        self.status.content = text

    def _answer(self, text: str):
        self.answer.content = text

    # ----------------------------------------------------------------- buttons
    def request_prediction(self):
        """Call /predict_grasps (the results arrive on the topics like anyone's)."""
        from zerograsp_ros.srv import PredictGrasps

        if not self.predict_client.service_is_ready():
            self._answer(f'`/{PREDICT_SERVICE}` is not available (is grasp_node running?)')
            return None
        with self.lock:   # the last pick's grasp is not part of the new prediction
            self.executed = None
            self._draw_executed()
        self._answer('predicting ...')
        future = self.predict_client.call_async(PredictGrasps.Request(refine=True))
        future.add_done_callback(lambda f: self._answer(self._answer_text('predict', f)))
        return future

    def request_dry_run_pick(self):
        """Call /pick with dry_run: plans the best grasp, highlights it, moves nothing."""
        from zerograsp_ros.srv import PickObject

        if not self.pick_client.service_is_ready():
            self._answer('`/pick` is not available (is execution_node running?)')
            return None
        self._answer('planning a pick (dry run) ...')
        future = self.pick_client.call_async(PickObject.Request(object_id=-1, dry_run=True))
        future.add_done_callback(lambda f: self._answer(self._answer_text('pick (dry run)', f)))
        return future

    @staticmethod
    def _answer_text(what: str, future) -> str:
        res = future.result()
        if res is None:
            return f'{what}: no answer ({future.exception()})'
        return f"{what}: {'ok' if res.success else 'FAILED'}: {res.message}"

    # ----------------------------------------------------------------- grasps
    def _on_grasps(self, msg: GraspArray):
        try:
            grasps = msg_to_grasps(msg)
        except InputError as exc:
            self.get_logger().warn(f'cannot draw grasps: {exc}', throttle_duration_sec=5.0)
            return
        with self.lock:
            self.grasps = grasps.sorted_by_score()
            if len(grasps):   # the slider spans this prediction's scores
                top = float(np.ceil(round(float(grasps.scores.max()) * 100, 4)) / 100) or 1.0
                self.slider.max = max(top, float(self.slider.value))
            self._draw_grasps()

    def relative_scores(self, scores) -> np.ndarray:
        """Scores mapped to [0, 1] over the latest prediction's range (red worst, green best).

        Refined scores of the shipped checkpoint span about 0.01-0.1, which absolute
        colours would draw all red.
        """
        return scene_view.relative_scores(scores, self.grasps.scores)

    def visible_grasps(self):
        """The grasps drawn now: above the threshold, of shown objects, best first."""
        g = self.grasps
        if g is None or not len(g):
            return g
        if not self.show_grasps.value:
            return g.subset(slice(0, 0))
        shown = [i for i, o in self.objects.items() if not o['checkbox'].value]
        keep = g.scores >= float(self.slider.value)
        if shown:
            keep &= ~np.isin(g.object_ids, shown)
        return g.subset(np.flatnonzero(keep)[:self.max_grasps])

    def _draw_grasps(self):
        with self.lock:
            grasps = self.visible_grasps()
            if grasps is None:
                return
            colours = scene_view.score_rgb8(self.relative_scores(grasps.scores))
            self._grasp_handle = self._draw_boxes('/grasps', grasps, colours,
                                                  self._grasp_handle)
            self._mark_update('grasps')
            self._shown = len(grasps)
            self._update_status()

    def _update_status(self):
        total = 0 if self.grasps is None else len(self.grasps)
        self._say(f'{self._shown} of {total} grasps shown (score >= '
                  f'{self.slider.value:.3f}), {len(self.objects)} object(s)')

    def _draw_boxes(self, name, grasps, colours, handle, scale: float = 1.0):
        if handle is not None:
            handle.remove()
        if not len(grasps):
            return None
        boxes = scene_view.grasp_box_instances(grasps.rotations, grasps.translations,
                                               grasps.widths, grasps.depths, colours,
                                               self.gripper)
        vertices, faces = self._cube
        return self.server.scene.add_batched_meshes_simple(
            name, vertices, faces, batched_wxyzs=boxes.wxyzs,
            batched_positions=boxes.positions, batched_scales=boxes.sizes * scale,
            batched_colors=boxes.colours, batched_opacities=boxes.opacities, lod='off',
            cast_shadow=False, receive_shadow=False)

    def _on_executed(self, msg: GraspArray):
        try:
            grasps = msg_to_grasps(msg) if msg.grasps else None
        except InputError as exc:
            self.get_logger().warn(f'cannot draw the executed grasp: {exc}',
                                   throttle_duration_sec=5.0)
            return
        with self.lock:
            self.executed = grasps
            self._draw_executed()

    def _draw_executed(self):
        g = self.executed
        if g is None:
            if self._executed_handle is not None:
                self._executed_handle.remove()
                self._executed_handle = None
            return
        colours = np.tile(np.array(scene_view.EXECUTED_GRASP_RGB, np.uint8), (len(g), 1))
        # Drawn a little larger so it shows through the candidate it coincides with.
        self._executed_handle = self._draw_boxes('/executed_grasp', g, colours,
                                                 self._executed_handle, scale=1.15)
        self._mark_update('executed')
        self._say(f'executing the grasp on object {int(g.object_ids[0])} '
                  f'(score {float(g.scores[0]):.2f}, blue)')

    # ----------------------------------------------------------------- objects
    def _on_scene(self, msg: SceneReconstruction):
        with self.lock:
            seen = set()
            for obj in msg.objects:
                oid = int(obj.object_id)
                seen.add(oid)
                try:
                    self._draw_object(oid, obj)
                except InputError as exc:
                    self.get_logger().warn(f'cannot draw object {oid}: {exc}',
                                           throttle_duration_sec=5.0)
            for oid in set(self.objects) - seen:
                entry = self.objects.pop(oid)
                if entry['handle'] is not None:
                    entry['handle'].remove()
                entry['checkbox'].remove()
            self._mark_update('reconstruction')
            if any(not o['checkbox'].value for o in self.objects.values()):
                self._draw_grasps()   # the grasps of hidden objects stay hidden
            else:
                self._update_status()

    def _draw_object(self, oid: int, obj):
        # A digest of the raw message fields: an unchanged object is not re-sent.
        digest = hash((len(obj.mesh.vertices), len(obj.mesh.triangles),
                       bytes(obj.surface.data[:4096]), len(obj.surface.data),
                       tuple(_XYZ(obj.mesh.vertices[0])) if obj.mesh.vertices else ()))
        entry = self.objects.get(oid)
        if entry is None:
            with self.objects_folder:
                box = self.server.gui.add_checkbox(f'object {oid}', initial_value=True)
            box.on_update(lambda _, oid=oid: self._toggle_object(oid))
            entry = self.objects[oid] = {'digest': None, 'handle': None, 'checkbox': box}
        if entry['digest'] == digest:
            return
        vertices, faces = mesh_arrays(obj.mesh)
        rgb = scene_view.object_rgb8(oid)
        if entry['handle'] is not None:
            entry['handle'].remove()
        name = f'/objects/object_{oid}'
        visible = bool(entry['checkbox'].value)
        if len(faces):
            entry['handle'] = self.server.scene.add_mesh_simple(
                name, vertices, faces, color=rgb, opacity=self.mesh_opacity, side='double',
                flat_shading=False, visible=visible)
        elif obj.surface.width:
            points = cloud_to_points(obj.surface, SURFACE_FIELDS)[:, :3]
            entry['handle'] = self.server.scene.add_point_cloud(
                name, points, rgb, point_size=self.point_size, visible=visible)
        else:
            entry['handle'] = None
        entry['digest'] = digest

    def _toggle_object(self, oid: int):
        with self.lock:
            entry = self.objects.get(oid)
            if entry is None:
                return
            if entry['handle'] is not None:
                entry['handle'].visible = bool(entry['checkbox'].value)
            self._draw_grasps()

    # ----------------------------------------------------------------- camera cloud
    def _on_frame(self, msg: RGBDFrameMsg):
        self.latest_frame = msg   # converted at most every cloud_period (_draw_cloud)

    def _draw_cloud(self):
        msg = self.latest_frame
        if msg is None or msg.header.stamp == self.frame_drawn_stamp:
            return
        self.frame_drawn_stamp = msg.header.stamp
        # A replayed or still scene sends the same images again: nothing to redraw.
        digest = (zlib.crc32(memoryview(msg.depth.data)), zlib.crc32(memoryview(msg.color.data)))
        if digest == self.frame_digest:
            return
        self.frame_digest = digest
        from zerograsp_ros.nodes.conversions import rgbd_msg_to_frame
        from zerograsp_ros.perception.segmentation import fit_plane

        try:
            frame = rgbd_msg_to_frame(msg)
        except InputError as exc:
            self.get_logger().warn(f'cannot draw the camera frame: {exc}',
                                   throttle_duration_sec=5.0)
            return
        points, colours = scene_view.visible_cloud(frame.depth, frame.rgb, frame.intrinsics,
                                                   self.cloud_stride)
        if not len(points):
            return
        self._cloud_handle = self.server.scene.add_point_cloud(
            '/visible_cloud', points, colours, point_size=self.point_size,
            point_shape='circle', visible=bool(self.show_cloud.value))
        patch = None
        if time.monotonic() - self.table_fitted >= TABLE_REFIT_PERIOD:   # the table stays put
            try:
                patch = scene_view.table_patch(fit_plane(points), points)
                self.table_fitted = time.monotonic()
            except InputError:
                patch = None   # no table in view: the cloud alone is drawn
        if patch is not None:
            if not self._camera_placed:
                self._place_initial_camera(patch)
            self._table_handle = self.server.scene.add_box(
                '/table', color=scene_view.TABLE_RGB, dimensions=tuple(patch.size),
                position=tuple(patch.position), wxyz=tuple(patch.wxyz), opacity=0.6,
                cast_shadow=False)
        self._mark_update('cloud')

    def _place_initial_camera(self, patch):
        """New browsers start above the table, on the camera's side, looking at its centre.

        From the camera itself the visible cloud would hide the meshes behind it.
        """
        centre = np.asarray(patch.position, dtype=np.float64)
        normal = scene_view.wxyz_to_matrix(patch.wxyz)[:, 2]
        towards_camera = -centre - (-centre @ normal) * normal
        towards_camera /= max(np.linalg.norm(towards_camera), 1e-9)
        position = centre + 0.48 * normal + 0.34 * towards_camera
        cam = self.server.initial_camera
        cam.look_at, cam.position, cam.up = tuple(centre), tuple(position), tuple(normal)
        for client in self.server.get_clients().values():   # pages opened before this
            with client.atomic():
                client.camera.up_direction = tuple(normal)
                client.camera.position = tuple(position)
                client.camera.look_at = tuple(centre)
        self._camera_placed = True

    def _mark_update(self, what: str):
        self.updates += 1
        self.last_update[what] = time.time()

    def destroy_node(self):
        try:
            self.server.stop()
        except Exception as exc:  # shutting down anyway; say why it was not clean
            self.get_logger().warning(f'web view server did not stop cleanly: {exc}')
        return super().destroy_node()


def main(args=None):
    from zerograsp_ros.nodes.bringup import run_single_node

    return run_single_node(WebViewNode, args)


if __name__ == '__main__':
    sys.exit(main())
