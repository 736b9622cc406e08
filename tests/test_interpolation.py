import numpy as np
import pytest

from policies.interpolation import upsample_linear


@pytest.mark.parametrize("source_hz, target_hz", [(2.5, 20), (5, 20), (10, 20), (20, 20), (3, 21)])
def test_exact_on_linear_paths(source_hz, target_hz):
    velocity, start = np.array([3.0, -1.5, 0.2]), np.array([10.0, 20.0, 0.5])
    n = 4
    chunk = start + velocity * (np.arange(1, n + 1) / source_hz)[:, None]
    fine = upsample_linear(start, chunk, source_hz, target_hz)
    times = np.arange(1, round(n * target_hz / source_hz) + 1) / target_hz
    assert fine.shape == (len(times), 3)
    assert np.allclose(fine, start + velocity * times[:, None])
    assert np.allclose(fine[-1], chunk[-1])


def test_piecewise_linear_through_corners_and_batched():
    anchor = np.array([[0.0, 0.0], [1.0, 1.0]])
    chunk = np.array([[[4.0, 0.0], [4.0, 4.0]], [[1.0, 1.0], [1.0, 1.0]]])
    fine = upsample_linear(anchor, chunk, 5, 20)
    assert fine.shape == (2, 8, 2)
    assert np.allclose(fine[0, :4], [[1, 0], [2, 0], [3, 0], [4, 0]])
    assert np.allclose(fine[0, 4:], [[4, 1], [4, 2], [4, 3], [4, 4]])
    assert np.allclose(fine[1], 1.0)


def test_rejects_bad_input():
    with pytest.raises(ValueError):
        upsample_linear(np.zeros(2), np.zeros((3, 2)), 0, 20)
    with pytest.raises(ValueError):
        upsample_linear(np.zeros(3), np.zeros((2, 3, 2)), 2.5, 20)
