"""`make_phantom`: one deterministic synthetic chest CT and its lung label map.

Anatomy is built in the patient frame, drawn on a coarse grid, and thresholded at full
resolution through the affine, so labels name the patient's sides in any orientation:
1 = right lung (larger RAS x), 2 = left lung. Only the lungs are labelled; trachea, main
bronchi, bowel gas and pleural effusion are not lung, vessels and lung pathology are.

Example (small and fast; `size=None` gives a realistic 512x512 grid):

>>> from lungseg.phantoms import make_phantom
>>> image, label = make_phantom(seed=0, size=64)
>>> image.array.dtype.name, label.array.dtype.name
('int16', 'uint8')
>>> sorted(set(label.array.ravel().tolist()))
[0, 1, 2]

Speed, one core (`torch.set_num_threads(1)`), measured with `python -m lungseg.phantoms.phantom`
on the shared 2-core dev VM (load ~3): 512x512x300 in 5.3-6.4 s, size=128 (128x128x70) in
1.4 s. Thin-slice variations (0.6 mm, ~500 slices) scale linearly with the slice count.
"""

from __future__ import annotations

import numpy as np

from lungseg.core.volume import Volume
from lungseg.phantoms.anatomy import Anatomy
from lungseg.phantoms.coarse import build_channels
from lungseg.phantoms.grid import make_grids, to_orientation
from lungseg.phantoms.params import sample_params
from lungseg.phantoms.render import render


def make_phantom(seed: int, size: int | None = None, orientation: str = "RAS", variations: bool = False,
                 **overrides) -> tuple[Volume, Volume]:
    """(image int16 HU, label uint8) for one deterministic phantom.

    `size` sets the in-plane matrix (the field of view is kept, spacing scales; slices scale
    likewise); `orientation` is any 3-letter axcode ("RAS", "LPS", ...) and changes only how
    the same voxels are stored; `variations` samples habitus, breath hold, contrast, kernel,
    noise, rotation, arms, cropping and pathology; `overrides` set `PhantomParams` fields.
    Both volumes carry `meta["phantom"]` (all parameters) and `meta["landmarks"]`.
    """
    p = sample_params(seed, variations, **overrides)
    out, coarse, frame = make_grids(p, size)
    an = Anatomy(p, np.random.default_rng([int(seed), 1]))
    ch, landmarks = build_channels(an, coarse, frame, np.random.default_rng([int(seed), 2]),
                                   np.random.default_rng([int(seed), 3]))
    image, label = render(ch, an, coarse, out, frame, np.random.default_rng([int(seed), 4]))
    img, affine = to_orientation(image, out, orientation)
    lab, _ = to_orientation(label, out, orientation)
    meta = {"phantom": p.to_dict(), "landmarks": landmarks, "orientation": orientation.upper(),
            "size": size, "source": "lungseg.phantoms"}
    return Volume(img, affine, meta), Volume(lab, affine.copy(), dict(meta))


if __name__ == "__main__":  # timing script: python -m lungseg.phantoms.phantom
    import time

    import torch

    torch.set_num_threads(1)
    for size, nz in ((None, 300), (128, None)):
        t0 = time.perf_counter()
        kw = {"slice_thickness": 320 / nz, "fov_z": 320.0} if nz else {}
        img, lab = make_phantom(0, size=size, **kw)
        print(f"size={size} shape={img.shape}: {time.perf_counter() - t0:.2f} s")
