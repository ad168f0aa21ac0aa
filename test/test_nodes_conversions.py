"""Message <-> numpy conversions of the nodes (no cv_bridge, no sensor_msgs_py)."""
import numpy as np
import pytest

pytestmark = pytest.mark.ros


def _grasps(n=12, seed=0):
    from zerograsp_ros.grasp.representation import GraspSet, rotation_from_approach

    rng = np.random.default_rng(seed)
    R = rotation_from_approach(rng.normal(size=(n, 3)), rng.uniform(0, np.pi, n))
    return GraspSet(R, rng.normal(size=(n, 3)), rng.uniform(0.01, 0.08, n),
                    rng.uniform(0, 0.04, n), rng.uniform(0, 1, n), rng.uniform(0, 1, n),
                    rng.uniform(0, 1, n), rng.integers(1, 5, n))


@pytest.mark.parametrize('encoding,dtype,channels', [
    ('rgb8', np.uint8, 3), ('bgr8', np.uint8, 3), ('mono8', np.uint8, 1),
    ('16UC1', np.uint16, 1), ('32FC1', np.float32, 1), ('32SC1', np.int32, 1)])
def test_image_round_trip_every_encoding(encoding, dtype, channels):
    from zerograsp_ros.nodes.conversions import image_to_numpy, numpy_to_image

    rng = np.random.default_rng(1)
    shape = (7, 11, channels) if channels > 1 else (7, 11)
    arr = (rng.uniform(0, 1000, shape)).astype(dtype)
    msg = numpy_to_image(arr, encoding)
    assert msg.step == 11 * channels * np.dtype(dtype).itemsize
    back = image_to_numpy(msg)
    assert back.dtype == dtype and back.shape == shape
    np.testing.assert_array_equal(back, arr)


def test_image_with_row_padding_and_big_endian():
    from sensor_msgs.msg import Image

    from zerograsp_ros.nodes.conversions import image_to_numpy

    arr = np.arange(12, dtype=np.uint16).reshape(3, 4) * 300
    rows = [arr[r].astype('>u2').tobytes() + b'\xff' * 6 for r in range(3)]  # step 14
    msg = Image(height=3, width=4, encoding='16UC1', is_bigendian=1, step=14,
                data=b''.join(rows))
    np.testing.assert_array_equal(image_to_numpy(msg), arr)


@pytest.mark.parametrize('mutate,cause', [
    (lambda m: setattr(m, 'encoding', 'yuv422'), "unsupported encoding 'yuv422'"),
    (lambda m: setattr(m, 'step', 5), 'step 5 is smaller'),
    (lambda m: setattr(m, 'height', 9), 'expected step*height'),
    (lambda m: setattr(m, 'width', 0), 'empty image'),
])
def test_bad_images_raise_input_error_naming_the_cause(mutate, cause):
    from zerograsp_ros.errors import InputError
    from zerograsp_ros.nodes.conversions import image_to_numpy, numpy_to_image

    msg = numpy_to_image(np.zeros((4, 6, 3), np.uint8), 'rgb8')
    mutate(msg)
    with pytest.raises(InputError, match=cause.replace('*', r'\*')):
        image_to_numpy(msg, 'colour image')


def test_frame_round_trip_and_validation():
    from zerograsp_ros.errors import InputError
    from zerograsp_ros.geometry.camera import CameraIntrinsics
    from zerograsp_ros.geometry.rgbd import RGBDFrame
    from zerograsp_ros.nodes.conversions import (
        frame_to_rgbd_msg,
        numpy_to_image,
        rgbd_msg_to_frame,
    )

    intr = CameraIntrinsics(500.0, 500.0, 32.0, 24.0, 64, 48)
    depth = np.full((48, 64), 0.6, np.float32)
    depth[:5] = np.nan
    rgb = np.random.default_rng(0).integers(0, 255, (48, 64, 3)).astype(np.uint8)
    msg = frame_to_rgbd_msg(RGBDFrame(rgb, depth, intr, frame_id='cam'), stamp=12.25)
    assert msg.depth.encoding == '16UC1' and msg.header.stamp.sec == 12
    frame = rgbd_msg_to_frame(msg)
    np.testing.assert_array_equal(frame.rgb, rgb)
    assert np.isnan(frame.depth[:5]).all() and np.allclose(frame.depth[5:], 0.6)
    assert frame.intrinsics == intr and frame.frame_id == 'cam' and frame.stamp == 12.25
    # bgr8 colour is turned into RGB
    msg.color = numpy_to_image(rgb[..., ::-1], 'bgr8')
    np.testing.assert_array_equal(rgbd_msg_to_frame(msg).rgb, rgb)
    # colour/depth size mismatch
    msg.color = numpy_to_image(rgb[:40], 'rgb8')
    with pytest.raises(InputError, match='does not match depth size'):
        rgbd_msg_to_frame(msg)
    # a depth encoding that is no depth
    msg.color = numpy_to_image(rgb, 'rgb8')
    msg.depth = numpy_to_image(rgb[..., 0], 'mono8')
    with pytest.raises(InputError, match="unsupported depth encoding 'mono8'"):
        rgbd_msg_to_frame(msg)
    # all-zero depth
    msg.depth = numpy_to_image(np.zeros((48, 64), np.uint16), '16UC1')
    with pytest.raises(InputError, match='no valid pixel'):
        rgbd_msg_to_frame(msg)
    # missing intrinsics
    msg = frame_to_rgbd_msg(RGBDFrame(rgb, depth, intr))
    msg.camera_info.k = [0.0] * 9
    with pytest.raises(InputError, match='K is all zero'):
        rgbd_msg_to_frame(msg)


def test_empty_frame_message_is_recognised():
    from zerograsp_ros.errors import InputError
    from zerograsp_ros.msg import RGBDFrame
    from zerograsp_ros.nodes.conversions import frame_msg_is_empty, rgbd_msg_to_frame

    assert frame_msg_is_empty(RGBDFrame())
    with pytest.raises(InputError, match='empty RGB-D frame'):
        rgbd_msg_to_frame(RGBDFrame())


def test_grasps_round_trip_and_non_finite_handling():
    from zerograsp_ros.errors import InputError
    from zerograsp_ros.nodes.conversions import grasps_to_msg, make_header, msg_to_grasps

    g = _grasps()
    msg = grasps_to_msg(g, make_header('cam', 3.0))
    assert len(msg.grasps) == len(g) and msg.header.frame_id == 'cam'
    back = msg_to_grasps(msg)
    np.testing.assert_allclose(back.rotations, g.rotations, atol=1e-6)
    np.testing.assert_allclose(back.translations, g.translations, atol=1e-6)
    for name in ('widths', 'depths', 'scores', 'qualities', 'graspness', 'object_ids'):
        np.testing.assert_allclose(getattr(back, name), getattr(g, name), atol=1e-6)
    # a NaN grasp never reaches a message
    g.widths[3] = np.nan
    g.translations[5, 1] = np.inf
    msg = grasps_to_msg(g, make_header('cam', 0.0))
    assert len(msg.grasps) == len(g) - 2
    assert all(np.isfinite([x.width, x.pose.position.x, x.pose.position.y]).all()
               for x in msg.grasps)
    # a NaN grasp in a message is refused with the cause
    msg.grasps[0].pose.position.x = float('nan')
    with pytest.raises(InputError, match='NaN/inf'):
        msg_to_grasps(msg)
    msg.grasps[0].pose.position.x = 0.0
    msg.grasps[0].pose.orientation.x = msg.grasps[0].pose.orientation.y = 0.0
    msg.grasps[0].pose.orientation.z = msg.grasps[0].pose.orientation.w = 0.0
    with pytest.raises(InputError, match='zero quaternion'):
        msg_to_grasps(msg)


def test_point_cloud_pack_unpack_any_layout():
    from sensor_msgs.msg import PointCloud2, PointField

    from zerograsp_ros.errors import InputError
    from zerograsp_ros.nodes.conversions import cloud_to_points, make_header, points_to_cloud

    rng = np.random.default_rng(2)
    pts = rng.normal(size=(50, 3)).astype(np.float32)
    msg = points_to_cloud({'x': pts[:, 0], 'y': pts[:, 1], 'z': pts[:, 2]},
                          make_header('cam', 0))
    assert msg.point_step == 12 and msg.width == 50 and msg.height == 1
    np.testing.assert_array_equal(cloud_to_points(msg), pts)
    # a foreign layout: z first, float64 x, padding, big endian
    rec = np.zeros(50, dtype=[('z', '>f4'), ('pad', 'V4'), ('x', '>f8'), ('y', '>f4')])
    rec['x'], rec['y'], rec['z'] = pts[:, 0], pts[:, 1], pts[:, 2]
    foreign = PointCloud2(height=1, width=50, is_bigendian=True, point_step=20,
                          row_step=1000, data=rec.tobytes(), fields=[
                              PointField(name='z', offset=0, datatype=PointField.FLOAT32,
                                         count=1),
                              PointField(name='x', offset=8, datatype=PointField.FLOAT64,
                                         count=1),
                              PointField(name='y', offset=16, datatype=PointField.FLOAT32,
                                         count=1)])
    np.testing.assert_allclose(cloud_to_points(foreign), pts, rtol=1e-6)
    with pytest.raises(InputError, match="lacks field"):
        cloud_to_points(foreign, ('x', 'normal_x'))
    foreign.data = foreign.data[:-20]
    with pytest.raises(InputError, match='expected 50 points'):
        cloud_to_points(foreign)


def test_reconstruction_round_trip():
    from zerograsp_ros.errors import InputError
    from zerograsp_ros.nodes.conversions import (
        ObjectShape,
        make_header,
        msg_to_scene,
        scene_points,
        scene_to_msg,
    )

    rng = np.random.default_rng(3)
    objs = [ObjectShape(k, rng.normal(size=(30 * k, 3)).astype(np.float32),
                        rng.normal(size=(30 * k, 3)).astype(np.float32),
                        rng.normal(size=(8, 3)).astype(np.float32),
                        np.array([[0, 1, 2], [2, 3, 7]]), 0.01 * k) for k in (1, 2)]
    msg = scene_to_msg(objs, make_header('cam', 1.0))
    assert [o.object_id for o in msg.objects] == [1, 2]
    back = msg_to_scene(msg)
    for a, b in zip(objs, back):
        np.testing.assert_array_equal(a.points, b.points)
        np.testing.assert_array_equal(a.normals, b.normals)
        np.testing.assert_allclose(a.vertices, b.vertices, rtol=1e-6)
        np.testing.assert_array_equal(a.faces, b.faces)
        assert b.voxel_size == pytest.approx(a.voxel_size)
    pts, ids = scene_points(back)
    assert len(pts) == 90 and (ids == 1).sum() == 30
    # surface only (what the grasp node sends to refinement)
    assert not scene_to_msg(objs, make_header('cam', 1.0), include_mesh=False) \
        .objects[0].mesh.triangles
    objs[0].faces[0, 0] = 99
    with pytest.raises(InputError, match='face index out of range'):
        scene_to_msg(objs, make_header('cam', 1.0))


def test_masks_round_trip_and_size_check():
    from zerograsp_ros.errors import InputError
    from zerograsp_ros.msg import InstanceMasks
    from zerograsp_ros.nodes.conversions import (
        labels_to_masks_msg,
        make_header,
        masks_msg_to_labels,
        numpy_to_image,
    )

    labels = np.zeros((10, 12), np.int32)
    labels[2:5, 3:6], labels[6:9, 1:4] = 3, 7
    msg = labels_to_masks_msg(labels, make_header('cam', 0), {3: 0.5})
    assert list(msg.object_ids) == [3, 7] and list(msg.scores) == [0.5, 1.0]
    np.testing.assert_array_equal(masks_msg_to_labels(msg, (10, 12)), labels)
    with pytest.raises(InputError, match='does not match the frame size'):
        masks_msg_to_labels(msg, (10, 13))
    with pytest.raises(InputError, match='empty'):
        masks_msg_to_labels(InstanceMasks())
    msg.labels = numpy_to_image(np.zeros((10, 12), np.float32), '32FC1')
    with pytest.raises(InputError, match="unsupported label encoding '32FC1'"):
        masks_msg_to_labels(msg)


def test_transform_stamped_round_trips_rigid_transforms():
    from scipy.spatial.transform import Rotation

    from zerograsp_ros.errors import InputError
    from zerograsp_ros.nodes.conversions import (
        transform_stamped_from_matrix,
        transform_stamped_to_matrix,
    )
    from zerograsp_ros.sim.cell_config import cell_static_transforms, load_sim_cell_config

    rng = np.random.default_rng(3)
    cases = [(p, c, T) for p, c, T in cell_static_transforms(load_sim_cell_config())]
    for i in range(20):
        T = np.eye(4)
        T[:3, :3] = Rotation.random(random_state=i).as_matrix()
        T[:3, 3] = rng.normal(size=3)
        cases.append(('a', f'b{i}', T))
    for parent, child, T in cases:
        msg = transform_stamped_from_matrix(T, parent, child, 12.5)
        assert (msg.header.frame_id, msg.child_frame_id) == (parent, child)
        assert (msg.header.stamp.sec, msg.header.stamp.nanosec) == (12, 500_000_000)
        t = msg.transform.translation
        np.testing.assert_allclose([t.x, t.y, t.z], T[:3, 3], atol=1e-12)
        r = msg.transform.rotation
        q = np.array([r.x, r.y, r.z, r.w])
        assert np.linalg.norm(q) == pytest.approx(1.0, abs=1e-9)
        np.testing.assert_allclose(Rotation.from_quat(q).as_matrix(), T[:3, :3], atol=1e-5)
        back_parent, back_child, back = transform_stamped_to_matrix(msg)
        assert (back_parent, back_child) == (parent, child)
        np.testing.assert_allclose(back, T, atol=1e-5)
    with pytest.raises(InputError, match='not orthonormal'):
        transform_stamped_from_matrix(np.diag([2.0, 1.0, 1.0, 1.0]), 'a', 'b', 0.0)
    with pytest.raises(InputError, match='finite 4x4'):
        transform_stamped_from_matrix(np.full((4, 4), np.nan), 'a', 'b', 0.0)
    msg = transform_stamped_from_matrix(np.eye(4), 'a', 'b', 0.0)
    msg.transform.rotation.w = 0.0
    with pytest.raises(InputError, match='a -> b: orientation is a zero quaternion'):
        transform_stamped_to_matrix(msg)
    msg.transform.rotation.w = 2.0
    with pytest.raises(InputError, match='non-unit quaternion'):
        transform_stamped_to_matrix(msg)
