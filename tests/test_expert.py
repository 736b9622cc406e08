import numpy as np
import pytest

from cfbench.expert import ExpertTrajectory, rounded_polyline, time_parametrize

CORNERS = np.array([[0.0, 0.0], [100.0, 0.0], [100.0, 100.0], [200.0, 100.0]])


def test_rounded_polyline_keeps_ends_and_rounds_corners():
    path = rounded_polyline(CORNERS, radius=15.0, spacing=1.0)
    assert np.allclose(path[0], CORNERS[0]) and np.allclose(path[-1], CORNERS[-1])
    assert np.linalg.norm(np.diff(path, axis=0), axis=1).max() <= 1.0 + 1e-9
    # A 90-degree corner rounded with radius r passes r*(sqrt(2)-1) from the sharp corner.
    gap = np.linalg.norm(path - CORNERS[1], axis=1).min()
    assert gap == pytest.approx(15.0 * (np.sqrt(2) - 1), abs=0.2)


def test_rounded_polyline_clips_radius_on_short_segments():
    corners = np.array([[0.0, 0.0], [10.0, 0.0], [10.0, 10.0]])
    path = rounded_polyline(corners, radius=50.0, spacing=0.5)
    assert np.allclose(path[[0, -1]], corners[[0, -1]])
    assert np.all(np.isfinite(path))


def test_time_parametrisation_respects_limits_and_rests_at_ends():
    path = rounded_polyline(CORNERS, 15.0, 2.0)
    trajectory = time_parametrize(path, [200.0, 150.0], [1000.0, 800.0])
    velocity = np.diff(trajectory.poses, axis=0) / np.diff(trajectory.times)[:, None]
    assert np.all(np.abs(velocity).max(axis=0) <= np.array([200.0, 150.0]) * 1.01)
    assert np.allclose(trajectory.poses[0], CORNERS[0]) and np.allclose(trajectory.poses[-1], CORNERS[-1], atol=1e-6)
    assert np.linalg.norm(velocity[0]) < 5 and np.linalg.norm(velocity[-1]) < 5


def test_time_parametrisation_ignores_repeated_points():
    path = np.array([[0.0, 0.0], [0.0, 0.0], [50.0, 0.0], [50.0, 0.0], [50.0, 50.0]])
    trajectory = time_parametrize(path, [100.0, 100.0], [500.0, 500.0])
    assert trajectory.duration > 0


def test_infeasible_parametrisation_is_reported():
    with pytest.raises((RuntimeError, ValueError)):
        time_parametrize(rounded_polyline(CORNERS, 15.0, 2.0), [0.0, 0.0], [1000.0, 1000.0])


def test_sampling_clips_to_duration_and_ends_at_goal():
    trajectory = ExpertTrajectory(times=np.array([0.0, 1.0, 2.3]), poses=np.array([[0.0], [1.0], [5.0]]))
    samples = trajectory.sample(2.5)
    assert len(samples) == 7  # t = 0, 0.4, ..., 2.0, then 2.4 clipped to 2.3
    assert samples[-1, 0] == 5.0 and samples[0, 0] == 0.0
    assert trajectory([-1.0, 10.0]).tolist() == [[0.0], [5.0]]
    with pytest.raises(ValueError):
        trajectory.sample(0)


def test_sampling_faster_than_the_physics_is_refused():
    """ExpertTrajectory.sample(1e9) used to try to allocate 25 GiB."""
    import numpy as np
    import pytest

    from cfbench.expert import ExpertTrajectory

    trajectory = ExpertTrajectory(times=np.array([0.0, 10.0]), poses=np.zeros((2, 2)))
    with pytest.raises(ValueError, match=r"sample rate must lie in \(0, 200\] Hz"):
        trajectory.sample(1e9)
    assert len(trajectory.sample(200)) == 2001
