"""Draw one phantom on the coarse grid (~2.5 mm) as six float32 channels, (z, y, x):

- `body`, `bone`, `lung`: signed distances in mm (inside positive); the renderer thresholds
  them at full resolution, so labels and edges stay sharp. Which lung a voxel belongs to is
  the sign of its patient-frame x: both lungs keep >= 2.5 mm from the midline plane;
- `soft`: HU of everything that is neither lung nor bone (fat, muscle, mediastinum, heart,
  great vessels, airways, abdomen, bowel gas, effusion);
- `lung_hu`: HU of lung tissue (parenchyma texture, vessels, pathology).

Also returns landmarks in world coordinates (trachea centre line, gas pockets) that tests and
reports use to check what is and is not lung.
"""

from __future__ import annotations

import numpy as np

from lungseg.phantoms.anatomy import SIDE_L, SIDE_R, Anatomy
from lungseg.phantoms.grid import Frame, Grid
from lungseg.phantoms.pathology import paint_pathology
from lungseg.phantoms.shapes import draw_capsules, ellipsoid_sdf, smooth_noise
from lungseg.phantoms.skeleton import bone_fields, canal_field
from lungseg.phantoms.vessels import grow_trees

FAT, MUSCLE, MEDIASTINUM, ABDOMEN, BLOOD = -100.0, 45.0, -85.0, 25.0, 42.0


def _paint(target: np.ndarray, sdf, hu, width: float) -> None:
    """Blend `hu` into `target` with a partial-volume ramp of `width` mm across sdf = 0."""
    occ = np.clip(0.5 + sdf / width, 0, 1)
    target += occ * (hu - target)


def _tube_field(grid: Grid, frame: Frame, caps: list[tuple], grow: float = 0.0) -> np.ndarray:
    f = np.full(grid.shape_zyx, -20.0, np.float32)
    if caps:
        a = frame.to_world(np.array([c[0] for c in caps]))
        b = frame.to_world(np.array([c[1] for c in caps]))
        draw_capsules(f, grid, a, b, np.array([c[2] for c in caps]) + grow,
                      np.array([c[3] for c in caps]) + grow)
    return f


def build_channels(an: Anatomy, grid: Grid, frame: Frame, rng: np.random.Generator,
                   tex: np.random.Generator):
    """Channels and landmarks. `rng` draws anatomy (independent of the grid, so a seed gives
    the same body at every size); `tex` draws grid-shaped textures."""
    p = an.p
    x2, y2 = frame.patient_xy(grid)
    z1 = frame.patient_z(grid)
    x, y, z = x2[None], y2[None], z1[:, None, None]
    cs = float(min(grid.spacing))
    ch: dict[str, np.ndarray] = {}

    body = an.body_sdf(x, y, z).astype(np.float32)
    ch["body"] = body
    bone, special = bone_fields(an, x, y, z)
    ch["bone"] = bone

    dia, g = an.diaphragm_z(x2, y2)
    above = ((z - dia) / g).astype(np.float32)
    cav = an.cavity_sdf(x, y, z).astype(np.float32)
    t = an.tubes
    big = t["aorta"] + t["pulmonary_trunk"] + t["pa_right"] + t["pa_left"] + t["pv_right"] \
        + t["pv_left"] + t["svc"] + t["neck_vessels"]
    vessels_big = _tube_field(grid, frame, big)
    oeso = _tube_field(grid, frame, t["oesophagus"])
    wall = _tube_field(grid, frame, t["airway_wall"])
    lumen = _tube_field(grid, frame, t["airway"])
    # mediastinal fat envelopes the great vessels; lungs abut the airway walls more closely
    carve = np.maximum(np.maximum(vessels_big + 4.0, oeso + 3.0), wall)

    # ---- lungs: analytic shape carved by mediastinal tubes
    lungs = []
    for side in (SIDE_R, SIDE_L):
        f = an.lung_sdf(side, x, y, z).astype(np.float32)
        np.minimum(f, -carve - 1.5, out=f)
        _keep_largest(f, cs)
        lungs.append(f)
    ch["lung"] = np.maximum(lungs[0], lungs[1])
    del lungs

    # ---- soft tissue
    soft = np.full(grid.shape_zyx, MUSCLE, np.float32)
    soft += 5 * smooth_noise(tex, grid.shape_zyx, 1.5)
    _paint(soft, an.fat - body, FAT, cs)
    thorax = np.minimum(np.minimum(cav, above), an.apex_z + 15 - z)
    _paint(soft, thorax, MEDIASTINUM + 10 * smooth_noise(tex, grid.shape_zyx, 2.0), cs)
    abdomen = np.minimum(cav + 4, -above)
    _paint(soft, abdomen, ABDOMEN, cs)
    liver = np.minimum(abdomen, 30 - x - 0.3 * np.maximum(0, -above))
    _paint(soft, liver, 110.0 if p.contrast else 58.0, cs)
    ls = an.ls
    spleen = np.minimum(ellipsoid_sdf(x - 80 * ls, y + 40 * ls, z - an.dome_top[SIDE_L] + 55 * ls,
                                      26 * ls, 45 * ls, 48 * ls), -above - 3)
    _paint(soft, spleen, 120.0 if p.contrast else 48.0, cs)
    blood = float(rng.uniform(220, 380)) if p.contrast else BLOOD
    heart = np.minimum(an.heart_sdf(x, y, z), above + 8)
    _paint(soft, heart, 45.0, cs)
    _paint(soft, heart - 7.0, blood, cs)  # chambers inside the myocardium
    _paint(soft, vessels_big, blood, cs)
    _paint(soft, oeso, 40.0, cs)
    _paint(soft, special, 105.0, cs)  # costal cartilage, discs
    _paint(soft, np.broadcast_to(canal_field(an, x2, y2), grid.shape_zyx), 15.0, cs)
    _paint(soft, wall, 40.0, cs)
    _paint(soft, lumen, -1000.0, cs)
    for side in (SIDE_R, SIDE_L):
        eff = an.effusion_sdf(x, y, z, side)
        if eff is not None:
            _paint(soft, eff, 12.0, cs)
    gas_points = _bowel(soft, an, grid, frame, rng, x, y, z, above, cs)
    soft[body < -2 * cs] = FAT  # outside: neutral, only seen through the skin ramp
    ch["soft"] = soft

    # ---- lung tissue HU
    lhu = np.full(grid.shape_zyx, p.lung_hu, np.float32)
    grad = 70.0 if p.breath == "expiration" else 55.0
    lhu += grad * np.clip((an.cav_cy - y) / an.cav_ay, 0, 1)  # dependent density
    lhu += 16 * smooth_noise(tex, grid.shape_zyx, 1.2)
    trees, bronchi = grow_trees(an, rng)
    _paint(lhu, _tube_field(grid, frame, trees), blood, cs)
    wall = [(a, b, ra + 0.6 + 0.25 * ra, rb + 0.6 + 0.25 * rb) for a, b, ra, rb in bronchi]
    _paint(lhu, _tube_field(grid, frame, wall), 20.0, cs)
    _paint(lhu, _tube_field(grid, frame, bronchi), -1000.0, cs)
    paint_pathology(lhu, an, grid, frame, rng, tex, cs)
    ch["lung_hu"] = lhu

    landmarks = _landmarks(an, frame, grid, gas_points)
    return ch, landmarks


def _keep_largest(f: np.ndarray, cs: float) -> None:
    """Each lung is one piece: push stray islands (between tubes, behind the heart) below 0."""
    from scipy.ndimage import binary_dilation, label

    lab, n = label(f > 0)
    if n <= 1:
        return
    sizes = np.bincount(lab.ravel())[1:]
    stray = (lab > 0) & (lab != int(np.argmax(sizes)) + 1)
    stray = binary_dilation(stray, iterations=1) & ~(lab == int(np.argmax(sizes)) + 1)
    f[stray] = np.minimum(f[stray], -cs)


def _bowel(soft, an: Anatomy, grid: Grid, frame: Frame, rng, x, y, z, above, cs) -> list:
    """Stomach with an air-fluid level under the left dome, colon gas pockets; returns points
    (world mm) well inside gas, all below the diaphragm."""
    ls = an.ls
    c = np.array([58 * ls, 6 * ls, an.dome_top[SIDE_L] - 44 * ls])
    stomach = np.minimum(ellipsoid_sdf(x - c[0], y - c[1], z - c[2], 46 * ls, 40 * ls, 34 * ls), -above - 6)
    level = float(rng.uniform(-8, 18))
    _paint(soft, stomach, 30.0, cs)
    gas = np.minimum(stomach - 3, y - (c[1] + level))
    _paint(soft, gas, -1000.0, cs)
    pockets = [gas]
    for _ in range(int(rng.integers(2, 5))):
        cx, cy = rng.uniform(-45, 95) * ls, rng.uniform(5, 55) * ls
        r = rng.uniform(9, 20, size=3)
        dia, _ = an.diaphragm_z(np.array([cx]), np.array([cy]))
        cz = float(dia[0]) - rng.uniform(35, 80) - r[2]
        pocket = np.minimum(ellipsoid_sdf(x - cx, y - cy, z - cz, *r), -above - 8)
        _paint(soft, pocket, 20.0, cs)
        _paint(soft, pocket - 2.5, -1000.0, cs)
        pockets.append(pocket - 2.5)
    pts = []
    for f in pockets:
        i = int(np.argmax(f))
        if f.flat[i] > 2.5:
            k, j, ii = np.unravel_index(i, f.shape)
            pts.append([float(grid.xs[ii]), float(grid.ys[j]), float(grid.zs[k])])
    return pts


def _landmarks(an: Anatomy, frame: Frame, grid: Grid, gas_points: list) -> dict:
    (x0, y0, z0), (x1, y1, z1), _, _ = an.tubes["airway"][0]
    zs = np.linspace(max(z1 + 15, 0), z1 + 70, 6)
    t = (zs - z0) / (z1 - z0)
    pts = np.stack([x0 + t * (x1 - x0), y0 + t * (y1 - y0), zs], axis=1)
    lo, hi = grid.zs[0], grid.zs[-1]
    world = frame.to_world(pts)
    world = world[(world[:, 2] > lo) & (world[:, 2] < hi)]
    return {
        "trachea_world_mm": world.round(2).tolist(),
        "trachea_radius_mm": round(an.trachea_r, 2),
        "gas_world_mm": [list(np.round(pt, 2)) for pt in gas_points],
        "carina_world_mm": frame.to_world(np.array(an.carina))[0].round(2).tolist(),
    }
