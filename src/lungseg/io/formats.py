"""The one format table: which suffix is which format, what a file's bytes say, how outputs are named.

>>> format_of("scan.nii.gz"), format_of("seg.seg.nrrd"), format_of("a.mhd"), format_of("x.txt")
('nifti', 'nrrd', 'mha', None)
>>> strip_suffix("case_7.nii.gz"), strip_suffix("lungs.seg.nrrd"), mask_name("dicom_folder")
('case_7', 'lungs', 'dicom_folder.nii.gz')
"""

from __future__ import annotations

from pathlib import Path

#: suffix -> format, longest first (".seg.nrrd" before ".nrrd", ".nii.gz" before ".nii").
SUFFIX_FORMATS: tuple[tuple[str, str], ...] = (
    (".nii.gz", "nifti"),
    (".nii", "nifti"),
    (".seg.nrrd", "nrrd"),
    (".nrrd", "nrrd"),
    (".nhdr", "nrrd"),
    (".mha", "mha"),
    (".mhd", "mha"),
    (".dcm", "dicom"),
    (".ima", "dicom"),
    (".dicom", "dicom"),
)
#: Suffixes of volume files (one file, one volume) that readers and dataset layouts accept.
VOLUME_SUFFIXES = tuple(s for s, f in SUFFIX_FORMATS if f != "dicom")
#: Suffixes `write_volume` writes; any other output name gets ".nii.gz" appended.
WRITE_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".mha", ".mhd")
#: Multi-part suffixes temporary files keep, so writers that choose by name still see them.
COMPOUND_SUFFIXES = (".nii.gz", ".seg.nrrd", ".tar.gz")
#: Suffixes never read as DICOM when scanning a folder.
NOT_DICOM = {".nii", ".gz", ".json", ".txt", ".csv", ".png", ".jpg", ".jpeg", ".xml", ".mha",
             ".mhd", ".raw", ".nrrd", ".zip", ".pdf", ".md", ".html", ".py", ".yaml", ".yml"}

_MAGIC = {
    b"\x89PNG": "a PNG picture",
    b"\xff\xd8\xff": "a JPEG picture",
    b"GIF8": "a GIF picture",
    b"II*\x00": "a TIFF picture",
    b"MM\x00*": "a TIFF picture",
    b"PK\x03\x04": "a ZIP archive (unzip it first)",
    b"%PDF": "a PDF document",
}


def _suffix_format(name: str) -> tuple[str, str] | None:
    low = name.lower()
    return next(((s, f) for s, f in SUFFIX_FORMATS if low.endswith(s)), None)


def format_of(path: str | Path) -> str | None:
    """'nifti', 'nrrd', 'mha' from the file name, 'dicom' for a folder or .dcm; None if unknown."""
    path = Path(path)
    if path.is_dir():
        return "dicom"
    hit = _suffix_format(path.name)
    return hit[1] if hit else None


def strip_suffix(name: str) -> str:
    """A file name without its (possibly compound) image suffix: the case name."""
    hit = _suffix_format(name)
    return name[: -len(hit[0])] if hit else name


def full_suffix(path: Path) -> str:
    """`.nii.gz` for `ct.nii.gz`, `.nrrd` for `ct.nrrd`, '' for a DICOM file without one."""
    name = path.name.lower()
    for suffix in COMPOUND_SUFFIXES:
        if name.endswith(suffix):
            return path.name[-len(suffix):]
    return path.suffix


def is_volume_file(path: Path) -> bool:
    """A visible file with a volume suffix (what dataset layouts and `evaluate` pair up)."""
    return path.is_file() and path.name.lower().endswith(VOLUME_SUFFIXES) and not path.name.startswith(".")


def mask_name(path: str | Path) -> str:
    """Mask file name for an input: scan.nii.gz -> scan.nii.gz; a DICOM folder -> folder.nii.gz."""
    return f"{strip_suffix(Path(path).name)}.nii.gz"


def sniff(path: Path) -> str | None:
    """What a file's first bytes say it is, when that is not a medical volume."""
    with open(path, "rb") as f:
        head = f.read(8)
    return next((what for magic, what in _MAGIC.items() if head.startswith(magic)), None)


def is_dicom_file(path: str | Path) -> bool:
    """True for a DICOM file: 'DICM' at byte 128, or (no preamble) a first tag in group 0002/0008."""
    path = Path(path)
    if not path.is_file() or path.suffix.lower() in NOT_DICOM:
        return False
    try:
        with open(path, "rb") as f:
            head = f.read(132)
    except OSError:
        return False
    if head[128:132] == b"DICM":
        return True
    return len(head) >= 8 and head[:2] in (b"\x08\x00", b"\x02\x00") and head[3:4] == b"\x00"
