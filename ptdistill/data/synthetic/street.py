"""Procedural street scenes built from boxes, cylinders and ellipsoids on a ground plane.

A street runs along x, sometimes crossed by a second one along y. Curbed sidewalks line it; behind
them, lots hold buildings, gardens (a house behind a fence or hedge, trees, bushes, a raised lawn) or
parks. Poles and trees stand on the sidewalks; people walk on them and in gardens and parks, and a
few cross the road; cars are parked at the curbs and drive in the lanes. Sizes, counts, placements
and reflectivities are drawn per scene, so that the class of a point is not a matter of its height:
road, sidewalk and terrain lie within 0.4 m of one another, hedges stand like fences, trunks like poles.

Every primitive carries a SemanticKITTI raw label id, an instance id and a reflectivity.
"""

from dataclasses import dataclass, field

import numpy as np

from ptdistill.data.synthetic.raycast import Boxes, Cylinders, Ellipsoids, GroundPlane

# SemanticKITTI raw label ids (semantic-kitti.yaml) of what the scenes hold.
CAR, MOVING_CAR, PERSON, MOVING_PERSON = 10, 252, 30, 254
ROAD, LANE_MARKING, SIDEWALK, BUILDING, FENCE = 40, 60, 48, 50, 51
VEGETATION, TRUNK, TERRAIN, POLE = 70, 71, 72, 80

EXTENT = 60.0  # half size of a scene, metres
SHAPE_SIZES = {"box": 7, "cylinder": 5, "ellipsoid": 6}  # numbers describing one primitive of each kind


@dataclass
class Scene:
    """Labelled primitives on the ground plane z = 0, whose label depends on where the roads run."""

    sensor_xy: tuple[float, float]  # where the LiDAR's car stands
    roads: list[tuple[int, float, float]]  # (0: along x | 1: along y, centre, half width)
    ground_reflectivity: dict[int, float]  # road, lane marking and terrain
    primitives: dict[str, list] = field(default_factory=lambda: {kind: [] for kind in SHAPE_SIZES})
    # kind -> [(shape numbers, (raw label, instance id, reflectivity))]

    def box(self, label, reflectivity, xs, ys, zs, yaw=0.0, instance=0):
        """Box spanning the ranges xs x ys x zs, then turned by yaw about its vertical axis."""
        (x0, x1), (y0, y1), (z0, z1) = xs, ys, zs
        shape = ((x0 + x1) / 2, (y0 + y1) / 2, (z0 + z1) / 2, abs(x1 - x0) / 2, abs(y1 - y0) / 2, (z1 - z0) / 2, yaw)
        self.primitives["box"].append((shape, (label, instance, reflectivity)))

    def cylinder(self, label, reflectivity, base, radius, height, instance=0):
        """Upright cylinder standing on the point base (x, y, z)."""
        self.primitives["cylinder"].append(((*base, radius, height), (label, instance, reflectivity)))

    def ellipsoid(self, label, reflectivity, center, radii, instance=0):
        self.primitives["ellipsoid"].append(((*center, *radii), (label, instance, reflectivity)))

    def families(self) -> list:
        """Primitive families in the order `surface` indexes them: ground, boxes, cylinders, ellipsoids."""
        box, cylinder, ellipsoid = (
            np.array([shape for shape, _ in self.primitives[kind]], dtype=float).reshape(-1, size)
            for kind, size in SHAPE_SIZES.items()
        )
        return [
            GroundPlane(),
            Boxes(box[:, :3], box[:, 3:6], box[:, 6]),
            Cylinders(cylinder[:, :3], cylinder[:, 3], cylinder[:, 4]),
            Ellipsoids(ellipsoid[:, :3], ellipsoid[:, 3:]),
        ]

    def surface(self, primitive: np.ndarray, point: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Raw label, instance id and reflectivity of each hit: primitive (R,) (-1 none, 0 ground), point (R, 3)."""
        attributes = [(0, 0, 0.0)] + [a for kind in SHAPE_SIZES for _, a in self.primitives[kind]]
        label, instance, reflectivity = np.array(attributes)[primitive].T  # (R,) each
        label, instance = label.astype(np.int64), instance.astype(np.int64)
        on_ground = primitive == 0
        label[on_ground] = self._ground_label(point[on_ground])
        for raw, value in self.ground_reflectivity.items():
            reflectivity[on_ground & (label == raw)] = value
        missed = primitive < 0
        label[missed], instance[missed], reflectivity[missed] = 0, 0, 0.0
        return label, instance, reflectivity

    def _ground_label(self, point: np.ndarray) -> np.ndarray:
        """Road inside a road (with a dashed centre line and solid edge lines), terrain elsewhere."""
        label = np.full(len(point), TERRAIN)
        for axis, centre, half_width in self.roads:
            across, along = np.abs(point[:, 1 - axis] - centre), point[:, axis]
            inside = across <= half_width
            marking = ((across < 0.07) & (np.mod(along, 9.0) < 3.0)) | (np.abs(across - (half_width - 0.3)) < 0.06)
            label[inside] = np.where(marking[inside], LANE_MARKING, ROAD)
        return label


def street_scene(rng: np.random.Generator) -> Scene:
    """A random street with its sidewalks, lots, furniture, cars and people."""
    traffic, parking = rng.uniform(1.7, 5.0), rng.random() < 0.6  # half width of the lanes; parking on both sides
    half_road, walk, curb = traffic + 2.2 * parking, rng.uniform(1.5, 4.0), rng.uniform(0.08, 0.2)
    lanes = np.arange(-traffic + 1.6, traffic - 1.5, 3.2)  # lane centres
    ground = {ROAD: rng.uniform(0.07, 0.15), LANE_MARKING: rng.uniform(0.6, 0.8), TERRAIN: rng.uniform(0.45, 0.6)}
    sensor_xy = (rng.uniform(-3, 3), rng.choice(lanes) + rng.normal(0, 0.2))
    scene = Scene(sensor_xy, roads=[(0, 0.0, half_road)], ground_reflectivity=ground)
    walk_reflectivity = rng.uniform(0.25, 0.35)
    blocks = [(-EXTENT, EXTENT, None)]  # (x0, x1, x of the corner with the crossing street)
    if rng.random() < 0.5:
        cross_x, cross_half = rng.uniform(-30, 30), rng.uniform(3.0, 5.0)
        scene.roads.append((1, cross_x, cross_half))
        left, right = cross_x - cross_half, cross_x + cross_half
        blocks = [(-EXTENT, left, left), (right, EXTENT, right)]
    instances = iter(range(1, 2**16))
    for side in (-1, 1):  # y < 0 and y > 0
        verge = rng.uniform(1.0, 3.0) * (rng.random() < 0.5)  # a strip of grass between road and sidewalk
        near, far = half_road + verge, half_road + verge + walk  # |y| of the sidewalk's edges
        for x0, x1, corner in blocks:
            scene.box(SIDEWALK, walk_reflectivity, (x0, x1), (side * near, side * far), (0, curb))
            if corner is not None:  # round the corner, along the crossing street
                inward = -walk if corner == x1 else walk
                ys = (side * half_road, side * EXTENT)
                scene.box(SIDEWALK, walk_reflectivity, (corner, corner + inward), ys, (0, curb))
                x0, x1 = (x0, x1 + inward) if corner == x1 else (x0 + inward, x1)
            _furnish_sidewalk(scene, rng, (x0, x1), side, half_road, (near, far), curb, instances)
            if parking:
                _park_cars(scene, rng, (x0, x1), side * (half_road - 1.1), instances)
            _fill_lots(scene, rng, (x0, x1), side, far, instances)
    _add_traffic(scene, rng, lanes, instances)
    return scene


def _furnish_sidewalk(scene, rng, xs, side, half_road, walkway, curb, instances):
    """Poles along the road, trees on the verge or a wide sidewalk, pedestrians."""
    (x0, x1), (near, far) = xs, walkway
    on_verge = near > half_road
    for x in np.arange(x0 + rng.uniform(2, 8), x1 - 1, rng.uniform(6, 14)):
        base = (x, side * (half_road + 0.4), 0.0 if on_verge else curb)
        scene.cylinder(POLE, rng.uniform(0.4, 0.8), base, rng.uniform(0.06, 0.15), rng.uniform(4, 10))
    tree_y, tree_z = ((half_road + near) / 2, 0.0) if on_verge else ((near + far) / 2, curb)
    if (on_verge or far - near > 2.2) and rng.random() < 0.8:
        for x in np.arange(x0 + rng.uniform(3, 8), x1 - 2, rng.uniform(6, 12)):
            _tree(scene, rng, (x + rng.normal(0, 0.3), side * tree_y, tree_z))
    for x in rng.uniform(x0, x1, rng.integers(3, 9)):  # pedestrians, alone or in groups of up to 3
        for dx in np.arange(rng.integers(1, 4)) * rng.uniform(0.6, 1.2):
            y = side * rng.uniform(near + 0.3, far - 0.3)
            _person(scene, rng, (x + dx, y, curb), PERSON, next(instances))


def _park_cars(scene, rng, xs, y, instances):
    """Cars parked along the line y, some spots empty."""
    for x in np.arange(xs[0] + rng.uniform(1, 6), xs[1] - 5, rng.uniform(5.5, 9)):
        if rng.random() < 0.6:
            _car(scene, rng, (x, y), rng.normal(0, 0.05), CAR, next(instances))


def _fill_lots(scene, rng, xs, side, front, instances):
    """Parcels along the frontage y = side * front: buildings, gardens or parks."""
    x, x_end = xs
    while x < x_end - 4:
        width = min(rng.uniform(8, 25), x_end - x)
        kind = rng.choice(["building", "garden", "park"], p=[0.3, 0.35, 0.35])
        if kind == "building":
            gap, setback = rng.uniform(0, 3), rng.uniform(0, 3) * (rng.random() < 0.5)
            ys = (side * (front + setback), side * (front + setback + rng.uniform(8, 20)))
            scene.box(BUILDING, rng.uniform(0.15, 0.6), (x + gap / 2, x + width - gap / 2), ys, (0, rng.uniform(4, 20)))
        else:
            _green_lot(scene, rng, (x, x + width), side, front, kind, instances)
        x += width


def _green_lot(scene, rng, xs, side, front, kind, instances):
    """A garden (fence or hedge, a house set back, trees, bushes) or a park (trees, bushes, maybe a fence)."""
    x0, x1 = xs
    if kind == "garden" or rng.random() < 0.7:
        _boundary(scene, rng, xs, side * (front + 0.3))
    depth = EXTENT - front
    if kind == "garden":
        depth = rng.uniform(5, 12)
        ys = (side * (front + depth), side * (front + depth + rng.uniform(6, 12)))
        scene.box(BUILDING, rng.uniform(0.15, 0.6), (x0 + 1, x1 - 1), ys, (0, rng.uniform(3.5, 9)))
    ground = 0.0
    if rng.random() < 0.5:  # a raised lawn: terrain as high as the sidewalk or higher
        ground, ys = rng.uniform(0.05, 0.4), (side * (front + 1), side * (front + depth - 1))
        scene.box(TERRAIN, scene.ground_reflectivity[TERRAIN], (x0 + 1, x1 - 1), ys, (0, ground))

    def spot():  # a random point of the lot, on the lawn if there is one
        return rng.uniform(x0 + 1, x1 - 1), side * (front + rng.uniform(1, depth - 1)), ground

    park = kind == "park"
    for _ in range(rng.integers(1, 3 + 3 * park)):
        _tree(scene, rng, spot())
    for _ in range(rng.integers(0, 3 + 3 * park)):
        _bush(scene, rng, spot())
    for _ in range(rng.integers(0, 3)):
        _person(scene, rng, spot(), PERSON, next(instances))


def _boundary(scene, rng, xs, y):
    """A fence or a hedge along the line y, with a gate."""
    gate = rng.uniform(*xs)
    for a, b in ((xs[0], gate - 0.6), (gate + 0.6, xs[1])):
        if b - a < 0.5:
            continue
        if rng.random() < 0.6:
            half = rng.uniform(0.02, 0.06)
            scene.box(FENCE, rng.uniform(0.2, 0.6), (a, b), (y - half, y + half), (0, rng.uniform(0.8, 2.0)))
        else:
            half = rng.uniform(0.25, 0.6)
            scene.box(VEGETATION, rng.uniform(0.4, 0.6), (a, b), (y - half, y + half), (0, rng.uniform(0.6, 1.8)))


def _tree(scene, rng, base):
    """A trunk with an ellipsoid crown that hides its top."""
    x, y, z = base
    trunk = rng.uniform(1.8, 4.0)
    scene.cylinder(TRUNK, rng.uniform(0.15, 0.3), base, rng.uniform(0.1, 0.3), trunk)
    crown, crown_height = rng.uniform(1.2, 3.0), rng.uniform(1.2, 2.8)
    radii = (crown, crown * rng.uniform(0.8, 1.2), crown_height)
    scene.ellipsoid(VEGETATION, rng.uniform(0.4, 0.6), (x, y, z + trunk + 0.6 * crown_height), radii)


def _bush(scene, rng, base):
    """An ellipsoid partly sunk into the ground at base (x, y, z)."""
    x, y, z = base
    height = rng.uniform(0.4, 1.2)
    radii = (rng.uniform(0.4, 1.5), rng.uniform(0.4, 1.5), height)
    scene.ellipsoid(VEGETATION, rng.uniform(0.4, 0.6), (x, y, z + rng.uniform(0, 0.5) * height), radii)


def _person(scene, rng, base, label, instance):
    """Body and head ellipsoids standing on base (x, y, z)."""
    x, y, z = base
    height, reflectivity = rng.uniform(1.5, 1.95), rng.uniform(0.2, 0.6)
    body = (rng.uniform(0.18, 0.26), rng.uniform(0.15, 0.22), 0.45 * height)
    scene.ellipsoid(label, reflectivity, (x, y, z + 0.45 * height), body, instance)
    scene.ellipsoid(label, reflectivity, (x, y, z + height - 0.11), (0.1, 0.1, 0.12), instance)


def _car(scene, rng, xy, yaw, label, instance):
    """Body and cabin boxes; the cabin (glass) is darker than the paint."""
    (x, y), length, width = xy, rng.uniform(3.6, 5.0), rng.uniform(1.6, 2.0)
    clearance, top = rng.uniform(0.2, 0.35), rng.uniform(0.75, 1.2)
    xs, ys = (x - length / 2, x + length / 2), (y - width / 2, y + width / 2)
    scene.box(label, rng.uniform(0.05, 0.8), xs, ys, (clearance, top), yaw, instance)
    cabin, shift = length * rng.uniform(0.45, 0.6), rng.uniform(-0.15, 0.05) * length
    x, y = x + shift * np.cos(yaw), y + shift * np.sin(yaw)
    xs, ys = (x - cabin / 2, x + cabin / 2), (y - 0.45 * width, y + 0.45 * width)
    scene.box(label, rng.uniform(0.05, 0.15), xs, ys, (top, top + rng.uniform(0.4, 0.65)), yaw, instance)


def _add_traffic(scene, rng, lanes, instances):
    """Moving cars in the lanes, clear of the sensor's own car, and people crossing the road."""
    sensor_x, sensor_y = scene.sensor_xy
    for _ in range(rng.integers(0, 5)):
        x, y = rng.uniform(-EXTENT + 5, EXTENT - 5), rng.choice(lanes)
        if abs(x - sensor_x) > 6 or abs(y - sensor_y) > 2:
            yaw = rng.normal(0, 0.03) + np.pi * (rng.random() < 0.5)
            _car(scene, rng, (x, y), yaw, MOVING_CAR, next(instances))
    for _ in range(rng.integers(0, 3)):
        x, y = sensor_x + rng.uniform(-25, 25), rng.uniform(lanes[0], lanes[-1])
        if abs(x - sensor_x) > 4:
            _person(scene, rng, (x, y, 0.0), MOVING_PERSON, next(instances))
