"""Phantom parameters: one typed record per case, sampled from a seed, saved with the case.

Patient frame used by every anatomy function (millimetres): x toward the patient's LEFT,
y toward ANTERIOR, z toward SUPERIOR, origin at the carina. The world (RAS+) frame differs
by the sign of x (RAS+ x points to the patient's right), a rotation about z and a shift;
`lungseg.phantoms.grid` is the only place that converts between the two.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np

from lungseg.core.errors import LungsegError

FULL_INPLANE = 512  # in-plane matrix of a full-size case


@dataclass
class PhantomParams:
    """Everything that makes one phantom: anatomy, pathology and scanner settings."""

    seed: int
    variations: bool = False
    # grid (size=None values; a smaller `size` keeps the field of view and scales spacing)
    n_inplane: int = FULL_INPLANE
    spacing_inplane: float = 0.75  # mm, at n_inplane
    slice_thickness: float = 1.5  # mm (= slice spacing)
    fov_z: float = 320.0  # mm, cranio-caudal extent of the stack
    fov_center: tuple[float, float, float] = (0.0, -10.0, -70.0)  # patient frame, mm
    crop: str = "none"  # "none", "top" (apices cut) or "bottom" (bases cut)
    table_z: float = -400.0  # world z of the carina (scanner table position)
    # body and lungs
    habitus: float = 1.0  # body size factor
    lung_scale: float = 1.0  # thoracic cavity size factor
    fat_mm: float = 15.0  # subcutaneous fat
    breath: str = "inspiration"  # or "expiration"
    lung_hu: float = -860.0  # parenchyma mean HU
    right_dome_mm: float = 18.0  # right hemidiaphragm higher than the left by this
    rotation_deg: float = 0.0  # patient rotation about z
    arms: str = "up"  # "up" (outside the FOV) or "down" (beside the body)
    contrast: bool = False
    # scanner
    kernel: str = "smooth"  # or "sharp"
    noise_sd: float = 12.0  # HU
    hu_offset: float = 0.0
    streaks: float = 0.0  # HU amplitude of shoulder streaks (0: none)
    # pathology (lists of dicts in the patient frame; see anatomy.pathology)
    nodules: list = field(default_factory=list)
    consolidation: list = field(default_factory=list)
    #: tumours of 2-4 cm radius touching the pleura or mediastinum: lung label, like nodules
    masses: list = field(default_factory=list)
    ground_glass: list = field(default_factory=list)
    emphysema: float = 0.0  # fraction of upper-zone lung with bullae/holes (0..1)
    effusion_mm: tuple[float, float] = (0.0, 0.0)  # max posterior thickness (right, left)

    def to_dict(self) -> dict:
        """JSON-ready record (tuples become lists)."""
        return _jsonable(dataclasses.asdict(self))


def _jsonable(obj):
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


def _pathology_spots(rng: np.random.Generator, n: int, rmin: float, rmax: float) -> list[dict]:
    """Sites in normalised lung coordinates; anatomy places them inside the lung."""
    return [
        {
            "side": str(rng.choice(["right", "left"])),
            "u": float(rng.uniform(0, 1)),  # lateral position (0 medial .. 1 lateral)
            "v": float(rng.uniform(0, 1)),  # AP position (0 posterior .. 1 anterior)
            "w": float(rng.uniform(0, 1)),  # height (0 base .. 1 apex)
            "radius": float(rng.uniform(rmin, rmax)),
            "hu": 0.0,
            "pleural": bool(rng.random() < 0.4),
        }
        for _ in range(n)
    ]


def sample_params(seed: int, variations: bool = False, **overrides) -> PhantomParams:
    """Draw a phantom's parameters from its seed; `overrides` replace sampled fields."""
    rng = np.random.default_rng(seed)
    p = PhantomParams(seed=int(seed), variations=bool(variations))
    u = rng.uniform
    if not variations:
        p.habitus = u(0.9, 1.1)
        p.lung_scale = u(0.92, 1.08)
        p.fat_mm = u(8, 22) * p.habitus
        p.slice_thickness = float(rng.choice([1.0, 1.25, 1.5, 2.0, 2.5]))
        p.noise_sd = u(8, 18)
        p.hu_offset = u(-5, 5)
        p.rotation_deg = u(-1.5, 1.5)
        p.lung_hu = u(-880, -830)
        p.right_dome_mm = u(10, 25)
    else:
        p.habitus = u(0.75, 1.35)
        p.lung_scale = float(np.clip(u(0.8, 1.16) * (0.85 + 0.15 * p.habitus), 0.8, 1.15))
        p.fat_mm = u(3, 12) + 28 * max(0.0, p.habitus - 0.8)
        p.breath = "expiration" if rng.random() < 0.3 else "inspiration"
        p.lung_hu = u(-815, -770) if p.breath == "expiration" else u(-910, -845)
        p.right_dome_mm = u(5, 30)
        p.slice_thickness = float(np.round(np.exp(u(np.log(0.6), np.log(5.0))), 2))
        p.kernel = "sharp" if rng.random() < 0.4 else "smooth"
        p.noise_sd = float(np.exp(u(np.log(5), np.log(60))))
        p.hu_offset = u(-20, 20)
        p.rotation_deg = u(-6, 6)
        p.arms = "down" if rng.random() < 0.35 else "up"
        p.contrast = bool(rng.random() < 0.5)
        p.streaks = u(60, 250) if rng.random() < 0.35 else 0.0
        r = rng.random()
        p.crop = "top" if r < 0.12 else "bottom" if r < 0.24 else "none"
        if rng.random() < 0.35:
            p.nodules = _pathology_spots(rng, int(rng.integers(1, 6)), 2.5, 15.0)
            for n in p.nodules:
                n["hu"] = u(-20, 80)
        if rng.random() < 0.25:
            p.consolidation = _pathology_spots(rng, int(rng.integers(1, 3)), 15, 40)
            for c in p.consolidation:
                c["hu"] = u(-60, 50)
                c["v"] = u(0, 0.5)  # dependent (posterior) more often
        if rng.random() < 0.25:
            p.ground_glass = _pathology_spots(rng, int(rng.integers(1, 4)), 12, 40)
            for g in p.ground_glass:
                g["hu"] = u(-620, -420)
        if rng.random() < 0.25:
            p.emphysema = u(0.1, 1.0)
        if rng.random() < 0.2:
            side = rng.integers(0, 3)  # right, left, both
            thick = [u(8, 35) if side in (0, 2) else 0.0, u(8, 35) if side in (1, 2) else 0.0]
            p.effusion_mm = (thick[0], thick[1])
    if variations:
        # a stream of its own, so phantoms without masses keep every other parameter
        mrng = np.random.default_rng([seed, 7])
        if mrng.random() < 0.3:
            p.masses = _pathology_spots(mrng, int(mrng.integers(1, 3)), 18.0, 40.0)
            for m in p.masses:
                m["hu"] = float(mrng.uniform(10, 70))
                m["pleural"] = True
    p.contrast = bool(p.contrast) if variations else bool(rng.random() < 0.3)
    # grid: in-plane spacing follows body width; z extent covers the lungs unless cropped
    body_width = 2 * (175 * p.habitus) + (120 * p.habitus if p.arms == "down" else 0) + 30
    p.spacing_inplane = float(np.clip(body_width / FULL_INPLANE + u(-0.03, 0.05), 0.6, 0.9))
    lung_height = 270 * p.lung_scale - (45 if p.breath == "expiration" else 0)
    p.fov_z = float(np.clip(lung_height + u(20, 80), 250, 350))
    lung_mid = 75 - lung_height / 2 - 5
    zc = lung_mid + u(-8, 8)
    if p.crop == "top":
        zc = 75 - p.fov_z / 2 - u(10, 50)  # apices cut
    elif p.crop == "bottom":
        zc = 75 - lung_height + p.fov_z / 2 + u(10, 50)  # bases cut
    p.fov_center = (u(-10, 10), u(-20, 0), float(zc))
    p.table_z = u(-700, -200)
    for key, value in overrides.items():
        if not hasattr(p, key) or key == "seed":
            raise LungsegError(f"unknown phantom parameter {key!r}")
        setattr(p, key, value)
    return p
