"""Reading and writing volumes with their geometry; dataset layouts."""

from lungseg.io.volumes import Volume, read_volume, write_volume

__all__ = ["Volume", "read_volume", "write_volume"]
