"""geometry/transforms.py: the one home of pose and rotation maths, and its tolerance policy."""
import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from zerograsp_ros.errors import InputError
from zerograsp_ros.geometry import transforms as tf


def random_pose(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return tf.make_pose(Rotation.random(random_state=seed).as_matrix(), rng.normal(0, 1, 3))


def test_pose_round_trip_through_position_and_quaternion():
    for seed in range(20):
        T = random_pose(seed)
        position, q = tf.matrix_to_pose(T)
        assert np.linalg.norm(q) == pytest.approx(1.0)
        np.testing.assert_allclose(tf.pose_to_matrix(position, q), T, atol=1e-12)


def test_quaternion_convention_is_xyzw():
    # 90 deg about z: (0, 0, sin 45, cos 45)
    R = tf.quaternion_to_matrix([0.0, 0.0, np.sqrt(0.5), np.sqrt(0.5)])
    np.testing.assert_allclose(R @ [1.0, 0.0, 0.0], [0.0, 1.0, 0.0], atol=1e-12)
    np.testing.assert_allclose(tf.matrix_to_quaternion(R), [0, 0, np.sqrt(0.5), np.sqrt(0.5)],
                               atol=1e-12)


def test_quaternion_tolerance_policy():
    # within the tolerance: normalised; beyond it, zero, tiny or NaN: InputError naming it
    R = tf.quaternion_to_matrix([0.0, 0.0, 0.0, 1.0 + 0.5 * tf.QUATERNION_NORM_TOLERANCE])
    np.testing.assert_allclose(R, np.eye(3), atol=1e-12)
    with pytest.raises(InputError, match='non-unit quaternion .*norm 1.1'):
        tf.quaternion_to_matrix([0.0, 0.0, 0.0, 1.1])
    for q, cause in (([0, 0, 0, 0], 'zero quaternion'), ([1e-30, 0, 0, 0], 'zero quaternion'),
                     ([np.nan, 0, 0, 1], 'NaN/inf'), ([0, 0, 1], '4 components')):
        with pytest.raises(InputError, match=cause):
            tf.quaternion_to_matrix(q, 'target')


def test_batched_quaternions_name_the_first_bad_one():
    q = np.tile([0.0, 0.0, 0.0, 1.0], (5, 1))
    assert tf.quaternion_to_matrix(q).shape == (5, 3, 3)
    q[3] = 0.0
    with pytest.raises(InputError, match='grasp 3 is a zero quaternion'):
        tf.quaternion_to_matrix(q, 'grasp')


def test_projection_to_so3_fixes_drift_and_reflections():
    rng = np.random.default_rng(0)
    R = Rotation.random(8, random_state=1).as_matrix()
    drifted = (R + rng.normal(0, 1e-3, R.shape)).astype(np.float32)
    P = tf.project_to_so3(drifted)
    np.testing.assert_allclose(P @ np.swapaxes(P, 1, 2), np.broadcast_to(np.eye(3), P.shape),
                               atol=1e-12)
    assert (np.linalg.det(P) > 0).all()
    assert np.abs(P - R).max() < 1e-2
    mirrored = np.diag([1.0, 1.0, -1.0])
    assert np.linalg.det(tf.project_to_so3(mirrored)) == pytest.approx(1.0)
    # a single matrix and a batch give the same answer
    np.testing.assert_allclose(tf.project_to_so3(drifted[2]), P[2], atol=1e-12)


def test_check_rigid():
    T = random_pose(3)
    assert tf.check_rigid(T, 'x') is not None
    with pytest.raises(InputError, match='place_pose must be a finite 4x4'):
        tf.check_rigid(np.eye(3), 'place_pose')
    with pytest.raises(InputError, match='NaN/inf'):
        tf.check_rigid(np.full((4, 4), np.nan))
    with pytest.raises(InputError, match='not orthonormal'):
        tf.check_rigid(np.diag([2.0, 1.0, 1.0, 1.0]))
    with pytest.raises(InputError, match='not orthonormal'):
        tf.check_rigid(np.diag([1.0, 1.0, -1.0, 1.0]))   # a reflection
    bad = T.copy()
    bad[3, 0] = 0.5
    with pytest.raises(InputError, match='bottom row'):
        tf.check_rigid(bad)


def test_rpy_angle_and_interpolation():
    R = tf.matrix_from_rpy([0.0, 0.0, np.pi / 2])
    np.testing.assert_allclose(R @ [1.0, 0.0, 0.0], [0.0, 1.0, 0.0], atol=1e-12)
    assert tf.rotation_angle(np.eye(3), R) == pytest.approx(np.pi / 2)
    with pytest.raises(InputError, match='3 finite angles'):
        tf.matrix_from_rpy([0.0, np.inf, 0.0])
    T0, T1 = np.eye(4), tf.make_pose(R, [1.0, 0.0, 0.0])
    path = tf.interpolate_poses(T0, T1, 4)
    assert path.shape == (4, 4, 4)
    np.testing.assert_allclose(path[-1], T1, atol=1e-12)
    np.testing.assert_allclose(path[1, :3, 3], [0.5, 0.0, 0.0])
    assert tf.rotation_angle(np.eye(3), path[1, :3, :3]) == pytest.approx(np.pi / 4)


def test_pose_to_matrix_names_the_bad_input():
    with pytest.raises(InputError, match='target: position must be 3 finite'):
        tf.pose_to_matrix([0.0, np.nan, 0.0], [0, 0, 0, 1], 'target')
    with pytest.raises(InputError, match='target: orientation is a zero quaternion'):
        tf.pose_to_matrix([0.0, 0.0, 0.0], [0, 0, 0, 0], 'target')
