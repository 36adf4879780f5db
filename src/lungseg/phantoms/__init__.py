"""Synthetic chest-CT phantoms with right/left lung labels, for tests, demos and training."""

from lungseg.phantoms.dataset import synth
from lungseg.phantoms.params import PhantomParams, sample_params
from lungseg.phantoms.phantom import make_phantom

__all__ = ["make_phantom", "synth", "PhantomParams", "sample_params"]
