import numpy as np
import pytest

import policies
from policies.interpolation import INTERPOLANTS, upsample


@pytest.mark.parametrize("source_hz, target_hz", [(2.5, 20), (5, 20), (10, 20), (20, 20), (3, 21)])
def test_exact_on_linear_paths(source_hz, target_hz):
    velocity, start = np.array([3.0, -1.5, 0.2]), np.array([10.0, 20.0, 0.5])
    n = 4
    chunk = start + velocity * (np.arange(1, n + 1) / source_hz)[:, None]
    fine = upsample(start, chunk, source_hz, target_hz)
    times = np.arange(1, round(n * target_hz / source_hz) + 1) / target_hz
    assert fine.shape == (len(times), 3)
    assert np.allclose(fine, start + velocity * times[:, None])
    assert np.allclose(fine[-1], chunk[-1])


def test_piecewise_linear_through_corners_and_batched():
    anchor = np.array([[0.0, 0.0], [1.0, 1.0]])
    chunk = np.array([[[4.0, 0.0], [4.0, 4.0]], [[1.0, 1.0], [1.0, 1.0]]])
    fine = upsample(anchor, chunk, 5, 20)
    assert fine.shape == (2, 8, 2)
    assert np.allclose(fine[0, :4], [[1, 0], [2, 0], [3, 0], [4, 0]])
    assert np.allclose(fine[0, 4:], [[4, 1], [4, 2], [4, 3], [4, 4]])
    assert np.allclose(fine[1], 1.0)


def test_rejects_bad_input():
    with pytest.raises(ValueError):
        upsample(np.zeros(2), np.zeros((3, 2)), 0, 20)
    with pytest.raises(ValueError):
        upsample(np.zeros(3), np.zeros((2, 3, 2)), 2.5, 20)



def _wiggly_chunk(rng, n=6, d=3):
    return rng.normal(size=(n, d)).cumsum(axis=0) * 5


@pytest.mark.parametrize("method", INTERPOLANTS)
@pytest.mark.parametrize("source_hz, target_hz", [(2.5, 20), (5, 20), (5, 5)])
def test_every_curve_passes_through_every_knot(method, source_hz, target_hz):
    rng = np.random.default_rng(0)
    anchor, chunk = rng.normal(size=3), _wiggly_chunk(rng)
    fine = upsample(anchor, chunk, source_hz, target_hz, method, past=anchor + 1.0)
    per_step = round(target_hz / source_hz)
    assert fine.shape == (len(chunk) * per_step, 3)
    np.testing.assert_allclose(fine[per_step - 1 :: per_step], chunk, atol=1e-9)


def test_cubic_reproduces_a_cubic_polynomial_exactly():
    times = np.arange(0, 7) / 2.5  # anchor at 0, six knots 0.4 s apart
    cubic = lambda t: np.stack([1 + 2 * t - 3 * t**2 + 0.5 * t**3, -t**3 + t], axis=-1)  # noqa: E731
    fine = upsample(cubic(times[0]), cubic(times[1:]), 2.5, 20, "cubic")
    np.testing.assert_allclose(fine, cubic(np.arange(1, 49) / 20), atol=1e-9)
    # the knot before the anchor is one more point of the same cubic: still exact
    fine = upsample(cubic(times[0]), cubic(times[1:]), 2.5, 20, "cubic", past=cubic(np.array(-0.4)))
    np.testing.assert_allclose(fine, cubic(np.arange(1, 49) / 20), atol=1e-9)


@pytest.mark.parametrize("method", ("cubic", "akima", "makima", "pchip"))
def test_collinear_knots_give_the_straight_line(method):
    anchor, velocity = np.array([2.0, -1.0]), np.array([3.0, 4.0])
    chunk = anchor + velocity * np.arange(1, 6)[:, None]
    np.testing.assert_allclose(upsample(anchor, chunk, 5, 20, method, past=anchor - velocity),
                               upsample(anchor, chunk, 5, 20, "linear"), atol=1e-9)


@pytest.mark.parametrize("method", INTERPOLANTS)
def test_a_chunk_of_one_action(method):
    fine = upsample(np.zeros(2), np.array([[4.0, 8.0]]), 5, 20, method)
    assert fine.shape == (4, 2) and np.allclose(fine[-1], [4.0, 8.0])
    if method != "cubic-clamped":  # two knots: a straight line (clamped: zero speed at both ends)
        np.testing.assert_allclose(fine, [[1, 2], [2, 4], [3, 6], [4, 8]], atol=1e-9)


@pytest.mark.parametrize("method", INTERPOLANTS)
def test_batched_equals_unbatched(method):
    rng = np.random.default_rng(1)
    anchors, chunks, pasts = rng.normal(size=(4, 3)), np.stack([_wiggly_chunk(rng) for _ in range(4)]), \
        rng.normal(size=(4, 3))
    batched = upsample(anchors, chunks, 2.5, 20, method, n_steps=4, past=pasts)
    for i in range(4):
        np.testing.assert_array_equal(batched[i], upsample(anchors[i], chunks[i], 2.5, 20, method, n_steps=4,
                                                           past=pasts[i]))


def test_only_the_executed_steps_come_back_and_the_tail_shapes_them():
    rng = np.random.default_rng(2)
    anchor, chunk = np.zeros(2), _wiggly_chunk(rng, d=2)
    head = upsample(anchor, chunk, 5, 20, "cubic", n_steps=2)
    assert head.shape == (8, 2) and np.allclose(head[-1], chunk[1])
    assert not np.allclose(head, upsample(anchor, chunk[:2], 5, 20, "cubic"))  # the tail bends the curve
    np.testing.assert_array_equal(upsample(anchor, chunk, 5, 20, "linear", n_steps=2),
                                  upsample(anchor, chunk[:2], 5, 20, "linear"))


def test_angles_are_unwrapped_before_the_curve():
    """A yaw that crosses the period's edge turns the short way, not back round the circle."""
    period = np.pi
    anchor = np.array([0.0, 0.0, 1.4])
    yaws = np.array([1.5, 1.6 - period, 1.7 - period])  # 1.5, 1.6, 1.7 modulo pi
    chunk = np.column_stack([np.arange(1.0, 4.0), np.zeros(3), yaws])
    for method in INTERPOLANTS:
        fine = upsample(anchor, chunk, 5, 20, method, angle_dims=(2,), angle_period=period)
        steps = np.diff(np.concatenate([[1.4], fine[:, 2]]))
        assert np.all(np.abs(steps) < 0.1), method
        np.testing.assert_allclose(fine[3::4, 2], [1.5, 1.6, 1.7], atol=1e-9)


def test_bad_names_and_shapes_are_refused():
    with pytest.raises(ValueError, match="unknown interpolation 'spline'.*linear"):
        upsample(np.zeros(2), np.zeros((3, 2)), 5, 20, "spline")
    with pytest.raises(ValueError, match="n_steps"):
        upsample(np.zeros(2), np.zeros((3, 2)), 5, 20, "cubic", n_steps=4)
    with pytest.raises(ValueError, match="past"):
        upsample(np.zeros(2), np.zeros((3, 2)), 5, 20, "cubic", past=np.zeros(3))
    with pytest.raises(ValueError, match="n >= 1"):
        upsample(np.zeros(2), np.zeros((0, 2)), 5, 20)
    with pytest.raises(ValueError, match="interpolation"):
        policies.make("dp-t", interpolation="bezier")
    with pytest.raises(ValueError, match="DiSPo emits target-rate actions"):
        policies.make("dispo", interpolation="akima")
