"""Visualisation node: reconstructions and grasps as RViz markers and a point cloud.

- Each reconstructed mesh is a TRIANGLE_LIST marker in namespace 'object_<id>'
  with its own colour; a DELETEALL marker first clears the previous scene.
- The top `max_grasp_markers` grasps are gripper-shaped LINE_LIST markers
  (namespace 'grasps'), coloured by score from red (low) to green (high).
- All reconstructed surface points are one PointCloud2 (x, y, z, normals and an
  'object_id' field that RViz can colour by).
Everything is published transient-local, so a late RViz still sees it.
"""
from __future__ import annotations

import colorsys
import sys

from builtin_interfaces.msg import Duration
from geometry_msgs.msg import Point
import numpy as np
from rclpy.node import Node
from sensor_msgs.msg import PointCloud2
from std_msgs.msg import ColorRGBA
from visualization_msgs.msg import Marker, MarkerArray

from zerograsp_ros.grasp.representation import gripper_wireframe
from zerograsp_ros.msg import GraspArray, SceneReconstruction
from zerograsp_ros.nodes.common import (
    GRASPS_TOPIC,
    LATCHED_QOS,
    MARKERS_TOPIC,
    RECONSTRUCTION_CLOUD_TOPIC,
    RECONSTRUCTION_TOPIC,
    Param,
    declare_params,
    non_negative,
)
from zerograsp_ros.nodes.conversions import (
    SURFACE_FIELDS,
    cloud_to_points,
    msg_to_grasps,
    points_to_cloud,
)


def object_color(object_id: int, alpha: float = 1.0) -> ColorRGBA:
    """A distinct colour per object id (golden-ratio hue steps)."""
    r, g, b = colorsys.hsv_to_rgb((0.13 + 0.618034 * int(object_id)) % 1.0, 0.65, 0.95)
    return ColorRGBA(r=r, g=g, b=b, a=float(alpha))


def score_color(score: float) -> ColorRGBA:
    s = float(np.clip(score, 0.0, 1.0))
    return ColorRGBA(r=1.0 - s, g=s, b=0.1, a=1.0)


def mesh_markers(scene: SceneReconstruction, alpha: float) -> list[Marker]:
    markers = []
    for obj in scene.objects:
        m = Marker()
        m.header = scene.header
        m.ns = f'object_{obj.object_id}'
        m.id = 0
        m.type = Marker.TRIANGLE_LIST
        m.action = Marker.ADD
        m.pose.orientation.w = 1.0
        m.scale.x = m.scale.y = m.scale.z = 1.0
        m.color = object_color(obj.object_id, alpha)
        verts = obj.mesh.vertices
        m.points = [verts[i] for tri in obj.mesh.triangles for i in tri.vertex_indices]
        m.lifetime = Duration()
        if m.points:
            markers.append(m)
    return markers


def grasp_markers(grasps_msg: GraspArray, count: int, line_width: float) -> list[Marker]:
    grasps = msg_to_grasps(grasps_msg).sorted_by_score()
    grasps = grasps.subset(slice(0, count))
    segments = gripper_wireframe(grasps)  # (N, 5, 2, 3)
    markers = []
    for i in range(len(grasps)):
        m = Marker()
        m.header = grasps_msg.header
        m.ns = 'grasps'
        m.id = i
        m.type = Marker.LINE_LIST
        m.action = Marker.ADD
        m.pose.orientation.w = 1.0
        m.scale.x = float(line_width)
        m.color = score_color(grasps.scores[i])
        m.points = [Point(x=float(p[0]), y=float(p[1]), z=float(p[2]))
                    for p in segments[i].reshape(-1, 3)]
        markers.append(m)
    return markers


PARAMETERS = (
    Param('max_grasp_markers', 10, 'Grasps drawn (best first)', lambda v: v >= 0,
          'an integer >= 0'),
    Param('mesh_alpha', 0.8, 'Opacity of the meshes', lambda v: 0.0 <= v <= 1.0,
          'a number in [0, 1]'),
    Param('grasp_line_width', 0.002, 'Line width of the gripper markers [m]', non_negative,
          'a number >= 0'),
)


class VisualizationNode(Node):
    def __init__(self, **kwargs):
        super().__init__('visualization_node', **kwargs)
        values = declare_params(self, PARAMETERS)
        self.max_grasps = values['max_grasp_markers']
        self.mesh_alpha = values['mesh_alpha']
        self.line_width = values['grasp_line_width']
        self.markers_pub = self.create_publisher(MarkerArray, MARKERS_TOPIC, LATCHED_QOS)
        self.cloud_pub = self.create_publisher(PointCloud2, RECONSTRUCTION_CLOUD_TOPIC,
                                               LATCHED_QOS)
        self.scene: SceneReconstruction | None = None
        self.grasps: GraspArray | None = None
        self.create_subscription(SceneReconstruction, RECONSTRUCTION_TOPIC, self._on_scene,
                                 LATCHED_QOS)
        self.create_subscription(GraspArray, GRASPS_TOPIC, self._on_grasps, LATCHED_QOS)
        self.published = 0

    def _on_scene(self, msg: SceneReconstruction):
        self.scene = msg
        self._publish_cloud(msg)
        self._publish_markers()

    def _on_grasps(self, msg: GraspArray):
        self.grasps = msg
        self._publish_markers()

    def _publish_cloud(self, scene: SceneReconstruction):
        pts, ids = [], []
        for obj in scene.objects:
            if obj.surface.width:
                p = cloud_to_points(obj.surface, SURFACE_FIELDS)
                pts.append(p)
                ids.append(np.full(len(p), obj.object_id, np.float32))
        cols = np.concatenate(pts) if pts else np.zeros((0, 6), np.float32)
        fields = dict(zip(SURFACE_FIELDS, cols.T))
        fields['object_id'] = np.concatenate(ids) if ids else np.zeros(0, np.float32)
        self.cloud_pub.publish(points_to_cloud(fields, scene.header))

    def _publish_markers(self):
        clear = Marker(action=Marker.DELETEALL)
        markers = [clear]
        try:
            if self.scene is not None:
                clear.header = self.scene.header
                markers += mesh_markers(self.scene, self.mesh_alpha)
            if self.grasps is not None:
                markers += grasp_markers(self.grasps, self.max_grasps, self.line_width)
        except Exception as exc:  # a bad message must not stop the node: say what it was
            self.get_logger().warn(f'cannot draw markers: {exc}', throttle_duration_sec=5.0)
            return
        self.markers_pub.publish(MarkerArray(markers=markers))
        self.published += 1


def main(args=None):
    from zerograsp_ros.nodes.bringup import run_single_node

    return run_single_node(VisualizationNode, args)


if __name__ == '__main__':
    sys.exit(main())
