"""split_left_right and postprocess: sides by the affine, cleaning, hole filling."""

import time

import cc3d
import numpy as np
import pytest

from lungseg.core.anatomy import split_left_right
from lungseg.core.labels import LEFT, RIGHT
from lungseg.core.morphology import fill_holes
from lungseg.inference.postprocess import open_domes, postprocess

RAS = np.diag([2.0, 2.0, 2.0, 1.0])
LPS = np.diag([-2.0, -2.0, 2.0, 1.0])  # stored L-P-S: larger i = patient's left


def two_lungs(shape=(60, 40, 40), bridge=False):
    lung = np.zeros(shape, bool)
    lung[5:25, 10:30, 5:35] = True   # low i
    lung[35:55, 10:30, 5:35] = True  # high i
    if bridge:  # anterior junction: the lungs touch
        lung[25:35, 26:30, 15:25] = True
    return lung


def test_two_components_ras_and_lps():
    lung = two_lungs()
    ras = split_left_right(lung, RAS)
    assert ras.dtype == np.uint8
    # RAS+: world x grows towards the patient's right -> high i is the right lung
    assert ras[45, 20, 20] == RIGHT and ras[15, 20, 20] == LEFT
    lps = split_left_right(lung, LPS)
    assert lps[45, 20, 20] == LEFT and lps[15, 20, 20] == RIGHT
    assert set(np.unique(ras)) == {0, 1, 2}
    assert np.array_equal(ras > 0, lung)


def test_touching_lungs_are_separated():
    lung = two_lungs(bridge=True)
    sides = split_left_right(lung, RAS)
    assert np.array_equal(sides > 0, lung)
    assert (sides[35:55, 10:30, 5:35] == RIGHT).mean() > 0.95
    assert (sides[5:25, 10:30, 5:35] == LEFT).mean() > 0.95


def test_sides_follow_permuted_axes():
    lung = two_lungs()
    # array axes stored as (k, j, i) with the affine permuted accordingly
    perm = np.transpose(lung, (2, 1, 0))
    aff = np.zeros((4, 4))
    aff[0, 2] = aff[1, 1] = aff[2, 0] = 2.0
    aff[3, 3] = 1.0
    sides = split_left_right(perm, aff)
    assert sides[20, 20, 45] == RIGHT and sides[20, 20, 15] == LEFT


def test_empty():
    assert not split_left_right(np.zeros((5, 5, 5), bool), RAS).any()
    out = postprocess(np.zeros((5, 5, 5), np.uint8), RAS)
    assert out.dtype == np.uint8 and not out.any()


def test_postprocess_cleans_fills_and_relabels():
    lung = two_lungs()
    labels = np.where(lung, 1, 0).astype(np.uint8)   # wrong: both lungs called "right"
    labels[40:45, 15:20, 15:20] = 0                   # hole inside the right lung
    labels[15, 20, 20] = 0                            # single-voxel hole
    labels[0:3, 0:3, 0:3] = 2                         # noise: 27 voxels * 8 mm^3 = 0.2 mL
    labels[27:32, 35:40, 0:5] = 1                     # a third blob of 1 mL
    out = postprocess(labels, RAS, min_volume_ml=5)
    assert out.dtype == np.uint8
    assert np.array_equal(out > 0, lung)              # holes filled, noise and blob gone
    assert out[45, 20, 20] == RIGHT and out[15, 20, 20] == LEFT
    # nothing big enough -> empty
    assert not postprocess(labels, RAS, min_volume_ml=1e6).any()


def test_slicewise_fill_keeps_openings_to_border():
    m = np.zeros((10, 10, 10), bool)
    m[:, :, 2:8] = True
    m[3:6, 3:6, 4:6] = False   # closed cavity -> filled
    m[0:3, 7:9, 4:6] = False   # open to the array border -> kept open
    f = fill_holes(m, slice_axis=2)
    assert f[4, 4, 4] and not f[0, 7, 4] and not f[2, 8, 5]


def dome_lung():
    """Two lungs; the left one's floor pushed up by a dome (open below it: the liver), and a
    vessel running through it (a 2D hole in every slice it crosses, open at its ends)."""
    lung = two_lungs()
    dome = np.zeros(lung.shape, bool)
    x, y = np.ogrid[5:25, 10:30]
    for k, r in enumerate((8, 7, 6, 4)):  # the dome narrows upwards: slices 5-8
        dome[5:25, 10:30, 5 + k] = (x - 15) ** 2 + (y - 20) ** 2 <= r * r
    vessel = np.zeros(lung.shape, bool)
    vessel[14:17, 19:22, 12:35] = True  # up to the lung's top: no 3D hole
    return lung & ~dome & ~vessel, dome, vessel


def test_axial_holes_the_network_rules_out_stay_open():
    lung, dome, vessel = dome_lung()
    assert dome.sum() > 400
    labels = lung.astype(np.uint8)
    plain = postprocess(labels, RAS, min_volume_ml=5)
    assert plain[dome].all() and plain[vessel].all()  # axial filling closes both
    outside = ~lung & ~vessel  # the network: P ~0 on the dome, the vessel half-believed
    out = postprocess(labels, RAS, min_volume_ml=5, outside=outside)
    assert not out[dome].any()
    assert (out[vessel] == LEFT).all() and (plain[vessel] == LEFT).all()  # low i: the left lung in RAS
    assert np.array_equal(out > 0, (plain > 0) & ~dome)
    # a view cut at the dome's lowest slice: the cut face is open (as for fill_holes), P decides
    view = postprocess(labels[:, :, 5:], RAS, min_volume_ml=5, outside=outside[:, :, 5:])
    assert not view[dome[:, :, 5:]].any() and view[vessel[:, :, 5:]].all()
    one = postprocess(labels[:, :, 6:7], RAS, min_volume_ml=0.1, outside=outside[:, :, 6:7])
    assert not one[dome[:, :, 6:7]].any() and one[vessel[:, :, 6:7]].all()
    # a hole closed in 3D (a cavity, a bulla) stays lung whatever P says
    cavity = lung.copy()
    cavity[10:14, 15:18, 20:24] = False
    f = fill_holes(cavity, slice_axis=2)
    kept = open_domes(cavity, f, ~cavity)
    assert kept[10:14, 15:18, 20:24].all()


def test_postprocess_is_fast():
    shape = (256, 256, 150)
    lab = np.zeros(shape, np.uint8)
    zz, yy, xx = np.ogrid[:256, :256, :150]
    lab[((zz - 80) / 50.0) ** 2 + ((yy - 128) / 70.0) ** 2 + ((xx - 75) / 60.0) ** 2 < 1] = 1
    lab[((zz - 176) / 50.0) ** 2 + ((yy - 128) / 70.0) ** 2 + ((xx - 75) / 60.0) ** 2 < 1] = 1
    # CPU seconds of this process, not wall-clock: other jobs on the machine do not count.
    # Measured 0.3 s; the bound only catches a pathological (voxel-loop) regression.
    t = time.process_time()
    out = postprocess(lab, np.diag([1.0, 1.0, 1.0, 1.0]), min_volume_ml=10)
    assert time.process_time() - t < 10
    assert out[176, 128, 75] == RIGHT and out[80, 128, 75] == LEFT


def test_refine_boundary_follows_ct_edge_and_ignores_distant_air():
    from lungseg.inference.postprocess import refine_boundary

    hu = np.full((40, 20, 20), 40.0)
    hu[5:20, 5:15, 5:15] = -850.0  # lung, true edge at i = 5 and 20
    hu[30:38] = -1000.0  # air elsewhere (outside the body), not connected
    prob = np.zeros(hu.shape)
    prob[8:17, 5:15, 5:15] = 0.95  # network sure in the middle
    prob[3:8, 5:15, 5:15] = prob[17:22, 5:15, 5:15] = 0.5  # unsure rim, 2 voxels too wide
    prob[30:38] = 0.4  # a vague network is unsure about the far air too
    out = refine_boundary(prob, hu)
    assert out[5:20, 5:15, 5:15].all()
    assert not out[3:5].any() and not out[20:22].any()  # rim beyond the CT edge dropped
    assert not out[30:38].any()  # unconnected dark air never let in


def test_local_edge_keeps_the_rim_of_dense_lung_and_leaves_aerated_lung_at_minus_400():
    """Dependent ground glass (-550 HU) meets the wall at a higher HU than aerated lung: its rim
    (a voxel three-quarters lung, -400 < HU < the local half-way point) is lung; aerated lung's
    edge stays at -400 HU exactly (fails with the fixed -400 HU edge, which drops the rim)."""
    from lungseg.inference.postprocess import EDGE_HU, local_edge_hu, refine_levels

    spacing = (1.0, 1.0, 2.5)
    hu = np.full((60, 40, 12), 40, np.int16)
    level = np.zeros(hu.shape, np.uint8)
    hu[10:50, 10:30] = -550  # dense lung, the network sure of it (level 4) ...
    level[10:50, 10:30] = 4
    hu[8:10, 10:30] = hu[50:52, 10:30] = -350  # ... its rim, partial volume with the wall
    level[8:10, 10:30] = level[50:52, 10:30] = 3  # where the network is unsure
    edge = local_edge_hu(level, hu, spacing)
    assert float(edge.edge.max()) > -350 > EDGE_HU
    assert refine_levels(level, hu, edge)[8:52, 10:30].all()  # the rim is lung
    assert not refine_levels(level, hu, EDGE_HU)[8:10].any()  # a fixed -400 HU drops it
    assert not refine_levels(level, hu, edge)[:6].any()  # the wall stays out

    aerated = np.where(level == 4, np.int16(-850), hu)  # the same lung, aerated
    edge = local_edge_hu(level, aerated, spacing)
    assert np.all(edge.edge == EDGE_HU)
    assert np.array_equal(refine_levels(level, aerated, edge), refine_levels(level, aerated, EDGE_HU))

    # an airless lobe the network is sure of: its few voxels under -300 HU are noise, not
    # parenchyma, and do not move the edge (LIDC-0314's dense apex let neck speckle in)
    airless = np.where(level == 4, np.int16(20), hu)
    airless[10:50:7, 10:30:7] = -350
    assert np.all(local_edge_hu(level, airless, spacing).edge == EDGE_HU)


@pytest.mark.parametrize("shape,factors", [((7, 5, 4), (3, 3, 2)), ((30, 31, 32), (2, 2, 2)),
                                           ((9, 1, 6), (4, 1, 3)), ((5, 6, 7), (1, 1, 1))])
def test_block_sum_equals_padded_block_reduction(shape, factors):
    """`block_sum` (strided slices added axis by axis) gives exactly the sums of np.pad +
    a (n/f, f, ...) reshape, for both pad modes, bool and int16, partial edge blocks included."""
    from lungseg.core.morphology import block_sum, pool_any, pool_mean

    rng = np.random.default_rng(1)
    a = rng.integers(-1024, 1024, shape).astype(np.int16)
    for arr, mode in ((a, "edge"), (a, "constant"), (a > 100, "constant")):
        padded = np.pad(arr, [(0, (-n) % f) for n, f in zip(shape, factors, strict=True)], mode=mode)
        view = padded.reshape([x for n, f in zip(padded.shape, factors, strict=True) for x in (n // f, f)])
        expected = view.sum(axis=(1, 3, 5), dtype=np.int32)
        got = block_sum(arr, factors, edge=mode == "edge")
        assert got.dtype == np.int32 and np.array_equal(got, expected)
    if max(factors) > 1:
        assert np.array_equal(pool_mean(a, factors), (block_sum(a, factors, edge=True) / np.prod(factors)).astype(np.float32))
        assert pool_any(a > 100, factors, 0.5).shape == tuple(-(-n // f) for n, f in zip(shape, factors, strict=True))


def _lung_with_pieces():
    """A 1 mm lung (aerated, the reference) with three network-only dense pieces at its surface:
    a fat-free mass, a fatty piece (fat planes between muscle, as over an apex) and a small
    fatty speck."""
    from scipy import ndimage

    rng = np.random.default_rng(0)
    hu = np.full((80, 60, 60), 40.0, np.float32)  # soft tissue around
    lung = np.zeros(hu.shape, bool)
    lung[10:40, 10:50, 10:50] = True
    hu[lung] = -850.0
    mass = np.zeros(hu.shape, bool)
    mass[40:58, 20:40, 20:40] = True  # 7.2 mL at the lung's surface, 40 HU
    fatty = np.zeros(hu.shape, bool)
    fatty[20:35, 10:50, 50:58] = True  # 4.8 mL beside the lung
    # fat planes: 5 mm fat / 5 mm muscle layers
    layers = (np.indices(hu.shape)[0] // 5) % 2 == 0
    hu[fatty & layers] = -110.0
    speck = np.zeros(hu.shape, bool)
    speck[12:19, 4:10, 20:30] = True  # 0.4 mL of fat under the 1 mL floor
    hu[speck] = -110.0
    hu += rng.normal(0, 15, hu.shape).astype(np.float32)
    hu = ndimage.gaussian_filter(hu, 0.7)  # partial volume at every edge
    labels = (lung | mass | fatty | speck).astype(np.uint8)
    return labels, hu, lung.astype(np.uint8), mass, fatty, speck


def test_fatty_network_only_tissue_is_dropped_a_fat_free_mass_is_kept():
    from lungseg.inference.postprocess import drop_fatty_pieces

    labels, hu, reference, mass, fatty, speck = _lung_with_pieces()
    aff = np.diag([1.0, 1.0, 1.0, 1.0])
    out = drop_fatty_pieces(labels, hu, reference, aff)
    assert out.dtype == labels.dtype and out.shape == labels.shape
    assert not out[fatty].any()  # the fatty piece is gone
    assert out[mass].all()  # the mass (dense, fat-free) stays lung
    assert out[speck].all()  # under min_ml: left alone
    assert np.array_equal(out[reference > 0], labels[reference > 0])  # aerated lung untouched
    assert labels[fatty].all()  # the input is not modified
    # a looser fat share keeps the fatty piece too; no dense piece -> the same labels back
    assert out is not labels and drop_fatty_pieces(labels, hu, reference, aff, max_fat_share=0.9)[fatty].all()
    assert np.array_equal(drop_fatty_pieces(reference, hu, reference, aff), reference)


def test_partial_volume_next_to_air_is_not_counted_as_fat():
    from lungseg.inference.postprocess import drop_fatty_pieces

    labels, hu, reference, mass, fatty, speck = _lung_with_pieces()
    # a flat 8 mm mass whose 4 mm next to the aerated lung reads fat-like (-120 HU: partial
    # volume of air and soft tissue on a thick-slice scan): half of it, over MAX_FAT_SHARE
    flat = np.zeros_like(mass)
    flat[40:48, 15:45, 15:45] = True
    hu = np.where(flat, 40.0, hu).astype(np.float32)
    hu[40:44, 15:45, 15:45] = -120.0
    lab = ((reference > 0) | flat).astype(np.uint8)
    assert drop_fatty_pieces(lab, hu, reference, np.eye(4), air_margin_mm=3.0)[flat].all()
    # counted when the margin is switched off
    assert not drop_fatty_pieces(lab, hu, reference, np.eye(4), air_margin_mm=0.0)[flat].any()


def _chest_with_pocket():
    """Two lungs in a body of soft tissue; a pocket of air at the skin, half outside the body's
    hull, that a network called lung; a lung piece cut by the field of view on the other side."""
    shape = (80, 40, 40)
    hu = np.full(shape, -1000.0)
    hu[4:76, 2:38, :] = 40.0                      # body; y 38-39 is the air behind the back
    lung = two_lungs(shape=(60, 40, 40))
    lung = np.pad(lung, ((10, 10), (0, 0), (0, 0)))
    hu[lung] = -850.0
    hull = np.zeros(shape, bool)
    hull[4:76, 2:38, :] = True                    # the body's outline, lungs inside it
    labels = lung.astype(np.uint8)
    pocket = np.zeros(shape, bool)
    pocket[40:50, 33:40, 5:35] = True             # straddles the skin at y 38, air beyond it
    hu[pocket & (hu > -500)] = -900.0             # the gap between skin and the pad is air
    labels[pocket] = 1
    return hu, hull, labels, pocket, lung


def test_pocket_of_air_at_the_skin_is_not_lung():
    from lungseg.inference.postprocess import air_beside

    hu, hull, labels, pocket, lung = _chest_with_pocket()
    assert 0.5 < hull[pocket].mean() < 0.75      # the hull rule alone keeps it
    assert air_beside(pocket, labels > 0, hu, RAS) > 0.1
    assert air_beside(lung & (np.arange(80)[:, None, None] < 40), labels > 0, hu, RAS) == 0.0
    out = postprocess(labels, RAS, min_volume_ml=1.0, hu=hu, hull=hull)
    assert not out[pocket & ~lung].any()
    assert np.array_equal(out > 0, lung)
    without_hu = postprocess(labels, RAS, min_volume_ml=1.0, hull=hull)  # no CT: hull rule only
    assert without_hu[pocket].all()


def test_lung_cut_by_the_field_of_view_next_to_tissue_is_kept():
    hu, hull, labels, pocket, lung = _chest_with_pocket()
    labels[pocket] = 0
    cut = np.zeros(labels.shape, bool)
    cut[67:75, 31:40, 5:35] = True                # reaches the image edge: no air beside it
    hu[66:80, 30:40, :] = 40.0                    # the body runs off the image here
    hu[cut] = -850.0
    labels[cut] = 1
    hull[66:76, 36:40, :] = False                 # pokes out of a coarse hull
    assert 0.5 < hull[cut].mean() < 0.75
    assert not (cc3d.connected_components(labels > 0)[cut] == cc3d.connected_components(labels > 0)[lung][0]).any()
    out = postprocess(labels, RAS, min_volume_ml=1.0, hu=hu, hull=hull)
    assert out[cut].all()
