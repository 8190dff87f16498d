import json
from pathlib import Path

import numpy as np
import pytest
from scipy.interpolate import PchipInterpolator

from core.trajectory import MAX_TEXT_CHARS, Trajectory, boxes_on_grid, pchip, resample_path
from tests.fixtures.make_trajectory_cases import build, refused

FIXTURES = Path(__file__).parents[1] / "fixtures"
CASES = json.loads((FIXTURES / "trajectory_cases.json").read_text())
REFUSED = json.loads((FIXTURES / "trajectory_refused.json").read_text())
HORSE = Path(__file__).resolve().parents[3] / "shared" / "fixtures" / "official" / "horse-canny.json"


def test_fixture_is_up_to_date_with_its_independent_derivation():
    for stored, fresh in zip(CASES, build(), strict=True):
        assert np.allclose(stored["boxes"], fresh["boxes"])
    assert REFUSED == json.loads(json.dumps(refused()))


@pytest.mark.parametrize("case", REFUSED, ids=[c["name"] for c in REFUSED])
def test_limits_refuse_absurd_values_naming_the_field(case):
    with pytest.raises(ValueError) as e:
        Trajectory.from_reference_json(json.dumps(case["trajectory"]))
    assert str(e.value).startswith(case["field"] + ":"), str(e.value)


def test_a_huge_or_deeply_nested_text_is_refused_with_a_message_not_a_crash():
    huge = json.dumps(dict(CASES[0]["trajectory"], note="x" * MAX_TEXT_CHARS))
    with pytest.raises(ValueError, match=r"^trajectory: [\d,]+ characters, at most"):
        Trajectory.from_reference_json(huge)
    for depth in (9, 5000, 200_000):  # json.loads hits RecursionError somewhere in between
        with pytest.raises(ValueError, match="^trajectory: nested deeper than 8 levels"):
            Trajectory.from_reference_json('{"bounding_box": ' + "[" * depth + "]" * depth + "}")
    with pytest.raises(ValueError, match="^coordinates: nested deeper"):
        Trajectory.from_coordinates("[" * 100_000 + "]" * 100_000, (4, 4), 64, 64)


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_shared_cases(case):
    boxes = Trajectory.from_reference_json(case["trajectory"]).boxes(case["frames"])
    assert boxes.shape == (len(case["boxes"]), case["frames"], 4)
    assert np.allclose(boxes, case["boxes"], atol=1e-9)


@pytest.mark.parametrize("seed", range(10))
def test_pchip_matches_scipy(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(2, 9))
    t = np.sort(rng.choice(np.linspace(0, 10, 101), n, replace=False))
    y = rng.normal(size=n).round(1)
    tq = np.linspace(t[0], t[-1], 37)
    assert np.allclose(pchip(t, y, tq), PchipInterpolator(t, y)(tq), atol=1e-12)


def test_resampling_is_monotone_and_keeps_the_ends():
    path = np.array([[0, 0], [10, 1], [11, 30], [40, 31]], float)
    out = resample_path(path, 16)
    assert np.allclose(out[0], path[0]) and np.allclose(out[-1], path[-1])
    assert np.all(np.diff(out[:, 0]) >= 0) and np.all(np.diff(out[:, 1]) >= 0)


@pytest.mark.skipif(not HORSE.is_file(), reason="the reference fixture is not beside the repo")
def test_reference_horse_gives_the_reference_boxes():
    obj = json.loads(HORSE.read_text())
    boxes = Trajectory.from_reference_json(obj).boxes(16)
    path = np.array(obj["center_traj"][0], float)
    x1, y1, x2, y2 = obj["bounding_box"][0]
    expected = np.array([[x1 + dx, y1 + dy, x2 + dx, y2 + dy] for dx, dy in path - path[0]])
    assert np.array_equal(boxes[0], expected)


def test_round_trip_and_query_points():
    t = Trajectory.from_reference_json(CASES[2]["trajectory"])
    again = Trajectory.from_reference_json(json.dumps(t.to_reference_json()))
    assert np.allclose(again.boxes(7), t.boxes(7))
    pts = t.query_points()
    assert np.allclose(pts[0], [[45, 30]])
    outside = Trajectory.from_reference_json(dict(CASES[0]["trajectory"], query_point=[[[120, 90]]]))
    assert np.allclose(outside.query_points()[0], [[30, 40]])  # a point outside the box -> the centre


def test_kjnodes_coordinates_one_and_several_paths():
    one = Trajectory.from_coordinates('[{"x": 10, "y": 20}, {"x": 30, "y": 20}]', (8, 6), 64, 64)
    assert np.allclose(one.boxes(2), [[[6, 17, 14, 23], [26, 17, 34, 23]]])
    two = Trajectory.from_coordinates([[{"x": 10, "y": 10}, {"x": 12, "y": 10}], [{"x": 40, "y": 40}, {"x": 40, "y": 50}]],
                                      [(4, 4), (10, 10)], 64, 64, 3)
    assert two.boxes().shape == (2, 3, 4)
    assert json.loads(two.to_coordinates())[1][1] == {"x": 40.0, "y": 50.0}


def test_resizing_scales_per_axis_and_grid_scaling():
    t = Trajectory.from_reference_json(CASES[0]["trajectory"])  # 128 x 96
    r = t.resized(256, 48)
    assert np.allclose(r.boxes(4), t.boxes(4) * [2, 0.5, 2, 0.5])
    assert np.allclose(boxes_on_grid(t.boxes(4), (128, 96), (32, 24)), t.boxes(4) / 4)


@pytest.mark.parametrize("mutate, field", [
    (lambda o: "{not json", "trajectory"),
    (lambda o: "", "trajectory"),
    (lambda o: {k: v for k, v in o.items() if k != "center_traj"}, "center_traj"),
    (lambda o: dict(o, bounding_box=[]), "bounding_box"),
    (lambda o: dict(o, bounding_box=[[10, 20, 10, 60]]), r"bounding_box\[0\]"),
    (lambda o: dict(o, bounding_box=[[10, 20, float("nan"), 60]]), r"bounding_box\[0\]"),
    (lambda o: dict(o, bounding_box=[[500, 500, 600, 600]]), "outside"),
    (lambda o: dict(o, center_traj=[[[1, 2]]]), r"center_traj\[0\]"),
    (lambda o: dict(o, center_traj=[[[1, 2], [float("inf"), 3]]]), r"center_traj\[0\]"),
    (lambda o: dict(o, target_box=[[0, 0, 0, 10]]), r"target_box\[0\]"),
    (lambda o: dict(o, width=0), "width"),
    (lambda o: dict(o, query_point=[]), "query_point"),
])
def test_bad_input_names_the_field(mutate, field):
    with pytest.raises(ValueError, match=field):
        Trajectory.from_reference_json(mutate(dict(CASES[0]["trajectory"])))


def test_bad_coordinates():
    with pytest.raises(ValueError, match="coordinates"):
        Trajectory.from_coordinates('[{"x": 1}]', (4, 4), 64, 64)
    with pytest.raises(ValueError, match="box sizes"):
        Trajectory.from_coordinates('[[{"x": 1, "y": 1}, {"x": 2, "y": 2}]]', [(4, 4), (5, 5)] * 2, 64, 64)


def test_on_grid_lays_out_for_the_image_then_scales_to_the_grid():
    from core.trajectory import on_grid

    t = Trajectory.from_reference_json(CASES[0]["trajectory"])  # 128 x 96
    boxes, points = on_grid(t, 4, (256, 192), (64, 48))
    assert np.allclose(boxes, t.boxes(4) / 2)  # x2 to the image, /4 to the grid
    assert np.allclose(points[0], t.query_points()[0] / 2)
