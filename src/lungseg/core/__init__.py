"""The core layer: one owner for each basic fact (numpy/nibabel only; imports nothing else of lungseg).

Volume and its geometry (spacing, voxel volume, same grid, LPS<->RAS), the label convention
(0 background, 1 right lung, 2 left lung), right/left anatomy and the morphology helpers the
methods share. Everything above (io, methods, uses, app) calls these instead of re-deriving them.
Import the submodules (`lungseg.core.geometry`, ...): this package imports nothing itself, so
`import lungseg` stays light (no scipy, no torch).
"""
