import numpy as np

from lungseg.core.geometry import shifted_affine


def test_shifted_affine_puts_the_box_origin_where_the_grid_had_it():
    # an oblique LPS-like affine: index 0 of the box is index `start` of the grid, and every
    # box index maps to the world point of the grid index it came from
    aff = np.array([[-0.7, 0.1, 0.0, 120.0], [0.0, -0.7, 0.2, 80.0], [0.0, 0.0, 2.5, -300.0], [0, 0, 0, 1]])
    start = [10, 20, 3]
    box_aff = shifted_affine(aff, start)
    for idx in ([0, 0, 0], [5, 7, 2]):
        grid_idx = np.add(idx, start)
        assert np.allclose(box_aff @ [*idx, 1], aff @ [*grid_idx, 1])
    assert np.array_equal(box_aff[:3, :3], aff[:3, :3]) and box_aff is not aff
