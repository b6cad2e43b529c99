"""Ray casting: closed-form distances and normals, nearest hit, and azimuth culling equal to brute force."""

import numpy as np
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from ptdistill.data.synthetic.lidar import SpinningLidar
from ptdistill.data.synthetic.raycast import Boxes, Cylinders, Ellipsoids, GroundPlane, cast
from ptdistill.data.synthetic.street import street_scene

ORIGIN = np.array([0.0, 0.0, 2.0])


def unit(*v) -> np.ndarray:
    v = np.array(v, dtype=float).reshape(-1, 3)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def test_box_face_distance_and_normal():
    boxes = Boxes(np.array([[10.0, 0.0, 2.0]]), np.array([[1.0, 2.0, 1.0]]), np.array([0.0]))
    hits = cast(ORIGIN, unit(1, 0, 0), [boxes])
    assert hits.t[0] == 9.0 and hits.primitive[0] == 0
    np.testing.assert_allclose(hits.normal[0], [-1, 0, 0], atol=1e-12)
    turned = Boxes(boxes.center, np.array([[1.0, 1.0, 1.0]]), np.array([np.pi / 4]))  # a corner faces the ray
    assert np.isclose(cast(ORIGIN, unit(1, 0, 0), [turned]).t[0], 10 - np.sqrt(2))
    assert np.isinf(cast(ORIGIN, unit(-1, 0, 0), [boxes]).t[0])


def test_cylinder_wall_and_cap():
    cylinders = Cylinders(np.array([[5.0, 0.0, 0.0]]), np.array([0.5]), np.array([1.0]))
    wall = cast(np.array([0.0, 0.0, 0.5]), unit(1, 0, 0), [cylinders])
    assert np.isclose(wall.t[0], 4.5)
    np.testing.assert_allclose(wall.normal[0], [-1, 0, 0], atol=1e-12)
    cap = cast(np.array([5.1, 0.0, 3.0]), unit(0, 0, -1), [cylinders])
    assert np.isclose(cap.t[0], 2.0)
    np.testing.assert_allclose(cap.normal[0], [0, 0, 1])
    over = cast(np.array([0.0, 0.0, 1.5]), unit(1, 0, 0), [cylinders])
    assert np.isinf(over.t[0])


@settings(max_examples=50, deadline=None)
@given(
    center=st.tuples(*[st.floats(-20, 20)] * 3),
    radius=st.floats(0.1, 5),
    direction=st.tuples(*[st.floats(-1, 1)] * 3).filter(lambda d: np.linalg.norm(d) > 0.1),
)
def test_sphere_distance_matches_closed_form(center, radius, direction):
    center = np.array(center) + ORIGIN
    assume(np.linalg.norm(center - ORIGIN) > radius * 1.01)  # the origin outside the sphere
    d = unit(*direction)
    hits = cast(ORIGIN, d, [Ellipsoids(center[None], np.full((1, 3), radius))])
    along = d[0] @ (center - ORIGIN)
    disc = along**2 - np.sum((center - ORIGIN) ** 2) + radius**2
    assume(abs(disc) > 1e-6)  # not a tangent ray, which rounding may turn either way
    if disc < 0 or along < 0:
        assert np.isinf(hits.t[0])
    else:
        assert np.isclose(hits.t[0], along - np.sqrt(disc))
        np.testing.assert_allclose(hits.normal[0], (hits.point[0] - center) / radius, atol=1e-6)


def test_ground_plane_and_nearest_hit_occludes():
    d = unit([1, 0, -0.2], [1, 0, 0.1])
    boxes = Boxes(np.array([[4.0, 0.0, 0.0], [8.0, 0.0, 0.0]]), np.array([[0.5, 0.5, 5.0]] * 2), np.zeros(2))
    hits = cast(ORIGIN, d, [GroundPlane(), boxes])
    assert hits.primitive.tolist() == [1, 1]  # the near box hides the far box and the ground
    alone = cast(ORIGIN, d, [GroundPlane()])
    assert np.isclose(alone.t[0], -ORIGIN[2] / d[0, 2]) and np.isinf(alone.t[1])  # the upward ray misses
    assert alone.primitive.tolist() == [0, -1]


def test_culled_cast_equals_brute_force_on_a_street():
    lidar = SpinningLidar(azimuth_steps=256)
    rays = lidar.directions()
    for seed in range(3):
        scene = street_scene(np.random.default_rng(seed))
        origin = np.array([*scene.sensor_xy, 1.8])
        families = scene.families()
        hits = cast(origin, rays, families)
        distance = []
        for family in families:  # every ray against every primitive
            count = len(family.bounds()[1])
            ray, index = np.repeat(np.arange(len(rays)), count), np.tile(np.arange(count), len(rays))
            distance.append(family.distance(origin, rays[ray], index).reshape(len(rays), count))
        distance = np.concatenate(distance, axis=1)
        np.testing.assert_array_equal(hits.t, distance.min(axis=1))
        hit = np.isfinite(hits.t)
        assert hit.mean() > 0.5
        np.testing.assert_array_equal(distance[hit, hits.primitive[hit]], hits.t[hit])  # a nearest one (ties exist)
        assert (hits.primitive[~hit] == -1).all()
