"""lungseg: 3D patch-based lung segmentation on CT (PyTorch + MONAI)."""

from lungseg.errors import LungsegError
from lungseg.io.volumes import Volume, read_volume, write_volume

__version__ = "0.1.0"

__all__ = ["LungsegError", "Volume", "read_volume", "write_volume", "__version__"]
