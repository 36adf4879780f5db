"""Synthetic chest-CT phantoms with right/left lung labels, for tests, demos and training."""

from lungseg.synth.dataset import synth
from lungseg.synth.params import PhantomParams, sample_params
from lungseg.synth.phantom import make_phantom

__all__ = ["make_phantom", "synth", "PhantomParams", "sample_params"]
