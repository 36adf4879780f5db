"""Reading and writing volumes with their geometry; dataset layouts; input and output checks."""

from lungseg.core.volume import Volume
from lungseg.io.checks import check_image, check_pair
from lungseg.io.datasets import LAYOUTS, Case, detect_layout, find_cases
from lungseg.io.labels import NAMED_MAPPINGS, normalise_label, split_sides
from lungseg.io.safety import atomic_path, check_output
from lungseg.io.volumes import read_volume, write_volume

__all__ = [
    "LAYOUTS", "NAMED_MAPPINGS", "Case", "Volume", "atomic_path", "check_image", "check_output",
    "check_pair", "detect_layout", "find_cases", "normalise_label", "read_volume", "split_sides",
    "write_volume",
]
