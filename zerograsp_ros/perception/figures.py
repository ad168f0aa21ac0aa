"""Pictures of a prediction: the colour image with projected grasps, and a 3D view.

Matplotlib (Agg) so it works headless on any machine; used by the demo and
the README image. Inputs are core types: RGBDFrame, ObjectReconstruction-like
objects (object_id, points, normals, vertices, faces) and a GraspSet.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from zerograsp_ros.geometry.camera import project, unproject
from zerograsp_ros.geometry.rgbd import RGBDFrame
from zerograsp_ros.grasp.representation import GraspSet, gripper_wireframe


def object_colour(object_id: int) -> tuple[float, float, float]:
    """A stable, distinct colour per object id (tab10 cycle)."""
    import matplotlib

    return matplotlib.colormaps['tab10'](int(object_id) % 10)[:3]


def render_prediction_figure(frame: RGBDFrame, objects: list, grasps: GraspSet,
                             path: str | Path, top_k: int = 10, title: str = '') -> Path:
    """Write a two-panel PNG: image with the top-k grasps, and reconstruction + grasps in 3D."""
    import matplotlib

    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    from mpl_toolkits.mplot3d.art3d import Line3DCollection, Poly3DCollection

    grasps = grasps.sorted_by_score().subset(slice(0, top_k)) if len(grasps) else grasps
    segs = gripper_wireframe(grasps) if len(grasps) else np.zeros((0, 5, 2, 3))
    cmap = matplotlib.colormaps['viridis']
    s = grasps.scores if len(grasps) else np.zeros(0)
    norm = (s - s.min()) / (np.ptp(s) + 1e-9) if len(s) else s
    colours = [cmap(0.25 + 0.75 * v) for v in norm]

    fig = plt.figure(figsize=(13, 5.2), dpi=110)
    ax_img = fig.add_subplot(1, 2, 1)
    ax_img.imshow(frame.rgb)
    for i in range(len(grasps)):
        uv, z = project(segs[i].reshape(-1, 3), frame.intrinsics)
        if (z <= 0).any():
            continue
        for j in range(4):
            a, b = uv[2 * j], uv[2 * j + 1]
            ax_img.plot([a[0], b[0]], [a[1], b[1]], color=colours[i], lw=2.2 if i == 0 else 1.4)
    ax_img.set_xlim(0, frame.rgb.shape[1])
    ax_img.set_ylim(frame.rgb.shape[0], 0)
    ax_img.set_axis_off()
    ax_img.set_title(f'input RGB-D + top {len(grasps)} grasps (brighter = higher score)')

    ax = fig.add_subplot(1, 2, 2, projection='3d')
    visible = unproject(frame.depth, frame.intrinsics)
    if len(visible):
        keep = np.random.default_rng(0).choice(len(visible), min(len(visible), 6000), False)
        vis = visible[keep]
        ax.scatter(vis[:, 0], vis[:, 2], -vis[:, 1], s=0.3, c='0.75', alpha=0.35)
    all_pts = [visible] if len(visible) else []
    for obj in objects:
        colour = object_colour(obj.object_id)
        if len(getattr(obj, 'faces', [])) and len(obj.vertices):
            tris = obj.vertices[obj.faces][..., [0, 2, 1]] * np.array([1, 1, -1])
            ax.add_collection3d(Poly3DCollection(tris, facecolor=colour, edgecolor='none',
                                                 alpha=0.55))
        elif len(obj.points):
            p = obj.points
            ax.scatter(p[:, 0], p[:, 2], -p[:, 1], s=1.0, color=colour)
        if len(obj.points):
            all_pts.append(obj.points)
    if len(segs):
        lines = segs[:, :4].reshape(-1, 2, 3)[..., [0, 2, 1]] * np.array([1, 1, -1])
        ax.add_collection3d(Line3DCollection(lines, colors=np.repeat(colours, 4, axis=0),
                                             linewidths=1.6))
    on_objects = unproject(frame.depth, frame.intrinsics, mask=frame.labels > 0) \
        if frame.labels is not None else np.zeros((0, 3))
    focus = np.concatenate([on_objects] + [o.points for o in objects if len(o.points)])
    if len(focus) < 10:
        focus = np.concatenate(all_pts or [np.zeros((1, 3))])
    centre = np.median(focus, axis=0)
    span = max(0.12, float(np.percentile(np.abs(focus - centre), 98)) * 1.6)
    ax.set_xlim(centre[0] - span, centre[0] + span)
    ax.set_ylim(centre[2] - span, centre[2] + span)
    ax.set_zlim(-centre[1] - span, -centre[1] + span)
    ax.set_xlabel('x [m]')
    ax.set_ylabel('z (depth) [m]')
    ax.set_zlabel('-y [m]')
    ax.view_init(elev=22, azim=-62)
    ax.set_title(f'reconstruction of {len(objects)} objects (colour per object), '
                 'visible points grey')
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
