"""Partial views (bases only, apex only, slabs): a small piece of the second lung cut by the
field of view is still a lung; a gas pocket inside the view is not."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import SHARED

from lungseg.core.geometry import shifted_affine
from lungseg.core.volume import Volume
from lungseg.inference.classical import ClassicalParts, segment_classical
from lungseg.inference.predictor import (
    add_aerated_lung,
    add_cut_pieces,
    add_missed_pieces,
    drop_outside_pieces,
    grow_into_rims,
    is_partial_view,
    lung_like,
)

AFFINE = np.diag([2.0, 2.0, 2.0, 1.0])  # RAS: larger x index = patient's right


def _view(piece_z: slice, piece_hu: float = -850.0, nz: int = 60) -> Volume:
    """A body (40 HU) with a tall left lung and a small right piece at `piece_z`."""
    hu = np.full((120, 100, nz), -1000.0, np.float32)
    hu[10:110, 10:90, :] = 40.0
    hu[20:55, 25:75, :] = -850.0  # left lung (small x), the whole height of the view
    hu[65:85, 40:60, piece_z] = piece_hu  # right piece: 20 x 20 x 10 voxels = 32 mL
    return Volume(hu.astype(np.int16), AFFINE.copy())


def test_piece_cut_by_the_view_is_the_other_lung():
    image = _view(slice(50, 60))  # touches the top slice: the lung goes on above the view
    labels = segment_classical(image).array
    piece = labels[65:85, 40:60, 50:60]
    assert (piece == 1).mean() > 0.9  # right lung, although below the minimum lung volume
    assert (labels[20:55, 25:75, 30] == 2).mean() > 0.9


@pytest.mark.parametrize("piece_z,piece_hu,why", [
    (slice(25, 35), -850.0, "inside the view: a gas pocket, not a lung cut by the view"),
    (slice(50, 60), -1000.0, "pure gas"),
    (slice(50, 60), -300.0, "not aerated lung"),
])
def test_other_pieces_are_not_lung(piece_z, piece_hu, why):
    labels = segment_classical(_view(piece_z, piece_hu)).array
    assert not (labels[65:85, 40:60, piece_z] > 0).any(), why


def test_rule_only_for_partial_views():
    # 100 slices x 2 mm = 200 mm: a whole chest, where a small piece is not rescued
    tall = _view(slice(90, 100), nz=100)
    assert not is_partial_view(tall) and is_partial_view(_view(slice(50, 60)))
    assert not (segment_classical(tall).array[65:85, 40:60, 90:100] > 0).any()


def test_add_missed_pieces_keeps_network_boundary():
    net = np.zeros((20, 20, 10), np.uint8)
    net[2:8, 2:18, :] = 2
    other = np.zeros_like(net)
    other[1:9, 1:19, :] = 2  # the same lung, larger: must not replace the network's boundary
    other[12:18, 5:15, :] = 1  # a piece the network missed entirely
    out = add_missed_pieces(net, other)
    assert (out[12:18, 5:15, :] == 1).all()
    assert (out[1, :, :] == 0).all() and (out[2:8, 2:18, :] == 2).all()
    assert int((out > 0).sum()) == int((net > 0).sum()) + 6 * 10 * 10
    # with the CT: a piece that is mostly gas (a pocket of bowel gas the classical method took
    # for lung in a thin view of an abdomen) is not added; the same piece as lung is
    hu = np.full(net.shape, -850.0)
    hu[12:18, 5:15, :5] = -1000.0  # half of the missed piece below -950 HU
    assert np.array_equal(add_missed_pieces(net, other, hu=hu), net)
    hu[12:18, 5:15, :5] = -940.0
    assert (add_missed_pieces(net, other, hu=hu)[12:18, 5:15, :] == 1).all()


def test_add_missed_pieces_leaves_a_pocket_of_stomach_gas_away_from_the_ribs():
    # the classical method's piece the network missed: the pocket is not added where the body is
    # known; beside a rib it is, and without the hull (no position known) it is added as before
    affine, hull, hu, net, pocket = _lung_and_pocket()
    other = net.copy()
    other[pocket] = 1
    assert np.array_equal(add_missed_pieces(net, other, hu=hu, hull=hull, affine=affine), net)
    assert (add_missed_pieces(net, other, hu=hu)[pocket] == 1).all()
    hu[RIB] = 700.0
    assert (add_missed_pieces(net, other, hu=hu, hull=hull, affine=affine)[pocket] == 1).all()
    # a whole lung the network missed lies against the chest wall: added
    hu[RIB] = 40.0
    lone = np.zeros_like(net)
    lone[5:35, 20:60] = 2
    hu[lone > 0] = -850.0
    assert (add_missed_pieces(net, net | lone, hu=hu, hull=hull, affine=affine)[lone > 0] == 2).all()


def test_add_aerated_lung_takes_only_aerated_parenchyma():
    net = np.zeros((30, 20, 3), np.uint8)
    net[2:10, 2:18, :] = 1
    hu = np.full(net.shape, 40, np.int16)  # soft tissue
    hu[2:10, 2:18, :] = -850
    other = np.zeros_like(net)
    other[1:14, 1:19, :] = 1  # the classical lung reaches further than the network's
    hu[10:12, 2:18, :] = -860  # aerated rim the network left out: lung
    hu[12:14, 2:18, :] = -300  # denser rim, classical lung too: stays the network's call
    other[20:25, 5:10, :] = 2
    hu[20:25, 5:10, :] = -1000  # a gas piece (a bronchus' lumen): not lung
    keep_out = np.zeros(net.shape, bool)
    keep_out[10, 2:5, :] = True  # central airway voxels stay out
    out = add_aerated_lung(net, other, hu, keep_out=keep_out)
    added = (out > 0) & (net == 0)
    expect = np.zeros(net.shape, bool)
    expect[10:12, 2:18, :] = True
    expect[10, 2:5, :] = False
    expect &= other > 0
    assert np.array_equal(added, expect)
    assert (out[added] == 1).all() and np.array_equal(out[net > 0], net[net > 0])


def test_add_aerated_lung_leaves_a_pocket_of_stomach_gas_away_from_the_lung_and_ribs():
    # the classical mask holds the network's lung, an aerated rim beside it and the pocket; with
    # the body known, the rim that touches the lung is added and the pocket is not (unless a rib
    # lies beside it)
    affine, hull, hu, net, pocket = _lung_and_pocket()
    other = net.copy()
    other[pocket] = 1
    other[52:55, 25:55] = 1  # aerated rim the network stopped short of
    hu[52:55, 25:55] = -860.0
    out = add_aerated_lung(net, other, hu, hull=hull, affine=affine)
    assert (out[52:55, 25:55] == 1).all() and (out[pocket] == 0).all()
    assert (add_aerated_lung(net, other, hu)[pocket] == 1).all()  # body unknown: as before
    hu[RIB] = 700.0
    assert (add_aerated_lung(net, other, hu, hull=hull, affine=affine)[pocket] == 1).all()


@pytest.mark.slow
@pytest.mark.skipif(not (SHARED / "abdomen_ct_dicom").is_dir(), reason="shared data absent")
def test_real_abdomen_series_has_no_lung_with_the_default_model():
    # 20 slices of upper abdomen: the default model must not call bowel gas, or the air and fat
    # in the skin fold between the right arm and the body (20 mL before the fat check), lung
    import lungseg

    image = lungseg.read_volume(SHARED / "abdomen_ct_dicom")
    assert is_partial_view(image) and image.shape == (512, 512, 20)
    mask = lungseg.segment(image)
    assert mask.shape == image.shape and not mask.array.any()


A0002 = SHARED / "real_pathology" / "ct_lungpetctdx_a0002_8mm.nii.gz"


@pytest.mark.slow
@pytest.mark.skipif(not A0002.is_file(), reason="shared data absent")
def test_real_table_pad_is_not_lung():
    # Lung-PET-CT-Dx A0002: the foam pad under the patient runs into the field of view's lower
    # edge; counted as the patient's air (a lung the view cuts), it joined the table to the body
    # and 290 mL of it became "lung" (rows 458-511, the lungs end above row 390)
    import lungseg

    image = lungseg.read_volume(A0002)
    mask = lungseg.segment(image).array
    assert not mask[:, 420:, :].any()
    assert 2500 < np.count_nonzero(mask) * image.voxel_ml < 3000  # both lungs, 2747 mL
    # a slice at half the lungs' height: there the pad is not joined to the room's air (median
    # -924 HU, as dark as foam) and lies outside the body's own hull
    z = 14
    view = Volume(np.asarray(image.array)[:, :, z:z + 1], shifted_affine(image.affine, [0, 0, z]), {})
    one = lungseg.segment(view).array
    assert not one[:, 420:, :].any() and np.count_nonzero(one) * view.voxel_ml > 50


def test_grow_into_rims_joins_dark_rims_to_their_lung_only():
    # two lungs (x 2-9 right, 12-19 left in index; RAS affine: larger x = right), P band `rim`
    labels = np.zeros((22, 20, 6), np.uint8)
    labels[12:20, 2:10, :] = 1  # right lung at larger world x
    labels[2:10, 2:10, :] = 2
    hu = np.full(labels.shape, 40.0)
    hu[labels > 0] = -850.0
    rim = np.zeros(labels.shape, bool)
    rim[12:20, 10:14, :] = True  # a strip below the right lung, in the network's blur
    hu[12:20, 10:13, :] = -600.0  # dark (partial volume with lung): lung ...
    hu[12:20, 13, :] = -100.0  # ... fat at its far edge is not
    rim[2:6, 16:19, :] = True  # a dark pocket joined to no lung (bowel gas, a skin fold)
    hu[2:6, 16:19, :] = -900.0
    out = grow_into_rims(labels, rim, hu, affine=np.eye(4), midline_x=10.5)
    added = (out > 0) & (labels == 0)
    expect = np.zeros(labels.shape, bool)
    expect[12:20, 10:13, :] = True
    assert np.array_equal(added, expect) and (out[added] == 1).all()
    assert np.array_equal(out[labels > 0], labels[labels > 0])
    # the central airways are not crossed: a strip reached only through them stays out
    keep_out = np.zeros(labels.shape, bool)
    keep_out[12:20, 10, :] = True
    out2 = grow_into_rims(labels, rim, hu, keep_out=keep_out, affine=np.eye(4), midline_x=10.5)
    assert not ((out2 > 0) & (labels == 0)).any()
    # a rim joined to both lungs (anterior junction) is split at the body midline
    rim3 = np.zeros(labels.shape, bool)
    rim3[2:20, 10:12, :] = True
    hu3 = hu.copy()
    hu3[2:20, 10:12, :] = -600.0
    out3 = grow_into_rims(labels, rim3, hu3, affine=np.eye(4), midline_x=10.5)
    assert (out3[11:20, 10:12] == 1).all() and (out3[2:11, 10:12] == 2).all()
    assert grow_into_rims(labels, None, hu) is labels  # no rim band: nothing to do
    # a bronchus' lumen (gas, median below -900 HU) in the band, joined to a lung, stays out
    hu4 = hu.copy()
    hu4[12:20, 10:13, :] = -990.0
    assert np.array_equal(grow_into_rims(labels, rim, hu4, affine=np.eye(4), midline_x=10.5), labels)


def _strip_view(nz: int) -> Volume:
    """A body with a lung block and a thin dark strip (-600 HU, partial volume of a recess)
    running 90 mm sideways from it, and a dark pocket joined to nothing (bowel-like)."""
    hu = np.full((130, 100, nz), -1000.0, np.float32)
    hu[5:125, 10:90, :] = 40.0
    hu[20:55, 25:75, :] = -850.0  # the lung
    hu[55:100, 40:43, nz - 20:] = -600.0  # the strip, joined to the lung
    hu[105:115, 60:70, nz - 20:nz - 10] = -600.0  # a pocket joined to no lung
    return Volume(hu.astype(np.int16), AFFINE.copy())


def test_partial_view_takes_dark_strips_joined_to_the_lung(monkeypatch):
    # a stand-in network that sees only the lung block (P 1 below -800 HU, 0 elsewhere): the
    # strip's far end lies where P is 0, as a view of the bases sees a cut-off recess
    from lungseg.inference.predictor import Predictor

    def block_only(self, x):
        return (x < 0.1).astype(np.float32)  # [0, 1] window of [-1000, 1000] HU: below -800

    monkeypatch.setattr(Predictor, "_model_probability", block_only)
    pred = Predictor()
    for nz, partial in [(60, True), (100, False)]:
        image = _strip_view(nz)
        assert is_partial_view(image) is partial
        labels = pred.predict(image).array
        far = labels[75:100, 40:43, nz - 20:]
        assert (labels[25:50, 30:70, :] > 0).mean() > 0.95
        assert not (labels[105:115, 60:70] > 0).any()  # the pocket is never lung
        if partial:
            assert (far == labels[35, 50, nz - 1]).all() and (far > 0).all()
        else:  # a whole scan keeps rims only where the network's P reaches
            assert not (far > 0).any()


def test_add_cut_pieces_takes_small_aerated_pieces_the_view_cuts():
    # RAS 2 mm grid (larger x index = patient's right), 10 slices (20 mm): the right lung is
    # chosen; `found` also holds pieces too small for a lung (a 20 mm view asks 10 mL of one)
    shape = (60, 40, 10)
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    hu = np.full(shape, 40.0)
    labels = np.zeros(shape, np.uint8)
    labels[35:55, 5:35, :] = 1
    hu[labels > 0] = -850.0
    found = labels > 0
    pieces = {  # name: (box, HU, expected label); the body midline at world x 30 mm (index 15)
        "strip cut by the top face": ((slice(31, 33), slice(5, 35), slice(5, 10)), -700.0, 1),
        "strip cut by the bottom face": ((slice(56, 58), slice(5, 35), slice(0, 4)), -600.0, 1),
        "inside the view (bowel-like)": ((slice(20, 23), slice(5, 35), slice(3, 7)), -700.0, 0),
        "trachea's lumen": ((slice(27, 29), slice(18, 22), slice(0, 10)), -950.0, 0),
        "not aerated": ((slice(56, 58), slice(5, 35), slice(6, 10)), -300.0, 0),
        "on the left, where no lung was chosen": ((slice(2, 5), slice(5, 35), slice(5, 10)), -700.0, 0),
        "too small (under 0.5 mL)": ((slice(20, 21), slice(37, 39), slice(8, 10)), -700.0, 0),
    }
    for box, value, _ in pieces.values():
        hu[box] = value
        found[box] = True
    hull = np.ones(shape, bool)
    out = add_cut_pieces(labels, found, hu, hull, affine, min_volume_ml=10.0, midline_x=30.0)
    assert np.array_equal(out[labels > 0], labels[labels > 0])
    for name, (box, _, expect) in pieces.items():
        assert (out[box] == expect).all(), name
    assert int((out > 0).sum()) == int((labels > 0).sum()) + 2 * 30 * 5 + 2 * 30 * 4
    # a face that is not the image's (the post-processing box stops short of it) does not cut
    out2 = add_cut_pieces(labels, found, hu, hull, affine, min_volume_ml=10.0, midline_x=30.0,
                          cut_faces=(True, False))
    assert (out2[31:33, 5:35, 5:10] == 0).all() and (out2[56:58, 5:35, 0:4] == 1).all()
    # outside the body hull (room air at a cut field of view) is not lung
    hull[31:33] = False
    assert (add_cut_pieces(labels, found, hu, hull, affine, 10.0, 30.0)[31:33] == 0).all()


def _round_body():
    """(affine, hull, HU) of a 160 mm round body on a RAS 2 mm grid, 80 x 80 x 10, soft tissue inside."""
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    x, y = np.ogrid[:80, :80]
    hull = np.broadcast_to(((x - 40) ** 2 + (y - 40) ** 2 <= 37 ** 2)[..., None], (80, 80, 10)).copy()
    return affine, hull, np.where(hull, 40.0, -1000.0)


def _lung_and_pocket():
    """(affine, hull, HU, lung, pocket) in `_round_body`: the right lung (label 1) and a pocket of
    colon or stomach gas (-800 HU, not mostly gas) ~26 mm under the anterior wall, 14 mm from the
    lung and away from bone (A0002's hepatic flexure and gastric air lay 21-35 mm deep)."""
    affine, hull, hu = _round_body()
    lung = np.zeros(hull.shape, np.uint8)
    lung[55:72, 25:55] = 1
    hu[lung > 0] = -850.0
    pocket = (slice(44, 48), slice(60, 64), slice(4, 10))
    hu[pocket] = -800.0
    return affine, hull, hu, lung, pocket


#: a rib 6 mm from `_lung_and_pocket`'s pocket: a recess under a thick chest wall hugs the ribs
RIB = (slice(44, 48), slice(66, 68))


def test_add_cut_pieces_leaves_bowel_gas_deep_under_the_diaphragm():
    # a 160 mm body (disc of radius 74 mm, 2 mm voxels, 10 slices), the right lung chosen; three
    # aerated pieces too small for a lung, each cut by the view's top face: a recess strip under
    # the chest wall (8 mm deep), a pocket of bowel gas in the middle of the abdomen (~57 mm deep,
    # 28 mm from the lung) and a piece a vessel cuts off the lung (as deep, 4 mm from it)
    affine, hull, hu = _round_body()
    shape = hull.shape
    labels = np.zeros(shape, np.uint8)
    labels[41:70, 48:72] = 1
    hu[labels > 0] = -850.0
    found = labels > 0
    pieces = {
        "recess strip under the chest wall": ((slice(72, 74), slice(20, 50), slice(5, 10)), 1),
        "bowel gas deep in the abdomen": ((slice(41, 45), slice(30, 34), slice(4, 10)), 0),
        "cut off the lung by a vessel": ((slice(43, 47), slice(44, 47), slice(4, 10)), 1),
    }
    for box, _ in pieces.values():
        hu[box] = -700.0
        found[box] = True
    out = add_cut_pieces(labels, found, hu, hull, affine, min_volume_ml=10.0, midline_x=80.0)
    for name, (box, expect) in pieces.items():
        assert (out[box] == expect).all(), name
    assert np.array_equal(out[labels > 0], labels[labels > 0])


def test_add_cut_pieces_keeps_a_deep_piece_against_the_spine():
    # the posterior recess beside the spine lies deep under the back's muscles (53 mm here, 20 mm
    # from the chosen lung) but against bone: lung; a pocket as deep, 23 mm from bone, is not
    affine, hull, hu = _round_body()
    shape = hull.shape
    hu[38:44, 30:36] = 700.0  # the spine
    labels = np.zeros(shape, np.uint8)
    labels[60:72, 30:50] = 1
    hu[labels > 0] = -850.0
    found = labels > 0
    beside_spine = (slice(46, 50), slice(30, 36), slice(4, 10))
    pocket = (slice(46, 50), slice(46, 50), slice(4, 10))
    for box in (beside_spine, pocket):
        hu[box] = -700.0
        found[box] = True
    out = add_cut_pieces(labels, found, hu, hull, affine, min_volume_ml=10.0, midline_x=80.0)
    assert (out[beside_spine] == 1).all()
    assert (out[pocket] == 0).all()


def test_add_cut_pieces_leaves_a_pocket_under_a_thick_abdominal_wall():
    # a network piece too small for a lung that the view cuts: the pocket is not lung; the same
    # pocket beside a rib is
    affine, hull, hu, labels, pocket = _lung_and_pocket()
    found = labels > 0
    found[pocket] = True
    out = add_cut_pieces(labels, found, hu, hull, affine, min_volume_ml=10.0, midline_x=80.0)
    assert np.array_equal(out, labels)
    hu[RIB] = 700.0
    out = add_cut_pieces(labels, found, hu, hull, affine, min_volume_ml=10.0, midline_x=80.0)
    assert (out[pocket] == 1).all()


def test_lung_like_leaves_out_pieces_that_are_mostly_gas():
    # a lung piece (-850 HU, vessels at 40 HU) and a pocket of bowel gas (half of it at -1000 HU)
    labels = np.zeros((30, 20, 4), np.uint8)
    hu = np.full(labels.shape, 40.0)
    labels[2:12, 2:18] = 1
    hu[2:12, 2:18] = -850.0
    hu[5, 5:15] = 40.0  # a vessel
    labels[18:28, 2:18] = 2
    hu[18:28, 2:18] = -700.0
    hu[18:23, 2:18] = -1000.0  # half of the pocket is pure gas
    out = lung_like(labels, hu)
    assert (out[2:12, 2:18] == 1).all() and not out[18:28].any()
    hu[18:28, 2:18] = -870.0  # the same piece as aerated lung stays
    assert np.array_equal(lung_like(labels, hu), labels)


def test_single_slice_through_a_lung_tip_keeps_its_recess():
    # one 2 mm slice through the lowest tip of one lung: a recess of 0.8 mL, under the 1.0 mL
    # that 50 mL per 10 cm asks of 2 mm, over the classical method's thin-view 25 mL per 10 cm
    from lungseg.inference.classical import ClassicalParts

    hu = np.full((240, 200, 1), -1000.0, np.float32)
    hu[20:220, 20:180, :] = 40.0
    # right (large x), 20 x 20 x 1 voxels of 1 x 1 x 2 mm, 55 mm from the midline: a dark disc
    # within 30 mm of it could be the trachea in one slice, which the airway search takes out
    hu[165:185, 100:120, :] = -850.0
    image = Volume(hu.astype(np.int16), np.diag([1.0, 1.0, 2.0, 1.0]))
    labels = segment_classical(image).array
    assert (labels[165:185, 100:120] == 1).mean() > 0.9
    assert not ClassicalParts(image).lungs(min_volume_ml=1.0).array.any()  # at the taller bar


def test_air_outside_the_body_is_not_lung_in_a_partial_view():
    """A thick-sliced view of the top of the chest: the air in the fold between neck and
    shoulder, open to the room, is outside air (the classical method's step 2), and a mask piece
    lying mostly in it is dropped; the lung inside the body stays whatever its size."""
    shape = (120, 100, 6)
    hu = np.full(shape, -1000, np.int16)
    hu[10:110, 20:90, :] = 40                      # body
    hu[50:70, 70:90, :] = -1000                    # a fold open to the room (the notch at the top edge)
    hu[20:45, 30:60, :] = -850                     # lung
    aff = np.diag([2.0, 2.0, 10.0, 1.0])
    outside = ClassicalParts(Volume(hu, aff)).outside_air()
    assert outside.shape == shape
    assert outside[60, 80].all() and outside[0, 0].all()    # the fold and the room
    assert not outside[30, 45].any()                         # the lung
    labels = np.zeros(shape, np.uint8)
    labels[20:45, 30:60] = 1                                 # the lung
    labels[52:68, 72:88] = 1                                 # the fold, called lung
    kept = drop_outside_pieces(labels, outside, 2)
    assert (kept[20:45, 30:60] == 1).all()
    assert not kept[52:68, 72:88].any()
    # lung at the field of view's edge stays, even where the classical method reads it as room air
    cut = np.zeros(shape, np.uint8)
    cut[0:30, 30:60] = 2
    assert (drop_outside_pieces(cut, cut > 0, 2) == cut).all()
    # and a piece only partly outside stays
    part = np.zeros(shape, bool)
    part[20:30, 30:60] = True
    assert (drop_outside_pieces(labels, part, 2)[20:45, 30:60] == 1).all()
