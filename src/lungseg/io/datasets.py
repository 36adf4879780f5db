"""Dataset layouts → a list of `Case(name, image, label)`.

Layouts (see docs/formats.md):

- ``pairs``: files ``IMG_<x>`` and ``MASK_<x>`` with the same ``<x>`` (any subfolders),
  as in the Kaggle "Finding and measuring lungs in CT data" tutorial.
- ``msd``: Medical Segmentation Decathlon, ``dataset.json`` with a ``training`` list of
  ``{"image": "./imagesTr/x.nii.gz", "label": "./labelsTr/x.nii.gz"}``.
- ``nnunet``: nnU-Net v2, ``imagesTr/<case>_0000<ending>`` + ``labelsTr/<case><ending>`` and a
  ``dataset.json`` with ``channel_names``, ``labels``, ``file_ending``.
- ``csv``: a .csv file with ``image`` and ``label`` columns (paths relative to its folder;
  an optional ``name`` column).
- ``folders``: ``images/`` and ``labels/`` holding files with the same names.

>>> # find_cases("Task06_Lung/")  -> [Case(name='lung_001', image=..., label=...), ...]
"""

from __future__ import annotations

import csv
import json
import re
from dataclasses import dataclass
from pathlib import Path

from lungseg.core.errors import InputError
from lungseg.io.formats import is_volume_file, strip_suffix

LAYOUTS = ("pairs", "msd", "nnunet", "csv", "folders")


@dataclass(frozen=True)
class Case:
    """One image with its label (None where the dataset has none, e.g. a test set)."""

    name: str
    image: Path
    label: Path | None = None


def detect_layout(root: str | Path) -> str:
    """The layout of `root`; raises `InputError` listing the layouts when none matches."""
    root = Path(root)
    if root.is_file():
        if root.suffix.lower() == ".csv":
            return "csv"
        raise InputError("a dataset is a folder or a .csv file", root)
    if not root.is_dir():
        raise InputError("no such dataset folder", root)
    spec = root / "dataset.json"
    if spec.is_file():
        data = _load_json(spec)
        if "channel_names" in data or "file_ending" in data:
            return "nnunet"
        if "training" in data:
            return "msd"
    if (root / "imagesTr").is_dir() and (root / "labelsTr").is_dir():
        return "nnunet"
    if (root / "images").is_dir() and (root / "labels").is_dir():
        return "folders"
    if any(p.name.upper().startswith("IMG_") for p in root.rglob("*") if p.is_file()):
        return "pairs"
    csvs = sorted(root.glob("*.csv"))
    if len(csvs) == 1:
        return "csv"
    raise InputError(
        "unrecognised dataset layout; expected one of: pairs (IMG_x / MASK_x files), msd "
        "(dataset.json with 'training'), nnunet (imagesTr/ + labelsTr/ + dataset.json), csv "
        "(a .csv with image,label columns), folders (images/ + labels/ with the same names)",
        root)


def _load_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"not a readable JSON file ({exc})", path) from None
    if not isinstance(data, dict):
        raise InputError("dataset.json must hold a JSON object", path)
    return data


def find_cases(root: str | Path, layout: str = "auto") -> list[Case]:
    """List the cases of a dataset in one of `LAYOUTS` ("auto" detects it), sorted by name.

    Raises `InputError` for an unknown layout, a layout that does not match, missing files
    (named), images without labels where the layout requires them, or an empty dataset.
    """
    root = Path(root).expanduser()
    if layout == "auto":
        layout = detect_layout(root)
    finders = {"pairs": _pairs, "msd": _msd, "nnunet": _nnunet, "csv": _csv, "folders": _folders}
    if layout not in finders:
        raise InputError(f"unknown dataset layout {layout!r}; choose auto or one of {', '.join(LAYOUTS)}")
    if not root.exists():
        raise InputError("no such dataset folder or file", root)
    cases = finders[layout](root)
    if not cases:
        raise InputError(f"no cases found (layout {layout})", root)
    for case in cases:
        for p in (case.image, case.label):
            if p is not None and not p.exists():
                raise InputError(f"case {case.name}: file listed by the dataset is missing", p)
    names = [c.name for c in cases]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise InputError(f"case names appear twice: {', '.join(dup[:5])}", root)
    return sorted(cases, key=lambda c: c.name)


def _pairs(root: Path) -> list[Case]:
    images, masks = {}, {}
    for p in sorted(root.rglob("*")):
        if not is_volume_file(p):
            continue
        m = re.match(r"(?i)^(IMG|MASK)_(.+)$", p.name)
        if m:
            key = (p.parent.relative_to(root).as_posix().replace("IMG", "").replace("MASK", ""),
                   m.group(2))
            (images if m.group(1).upper() == "IMG" else masks)[key] = p
    if not images:
        raise InputError("layout pairs: no IMG_* files", root)
    unmatched = sorted(p.name for k, p in images.items() if k not in masks)
    if unmatched:
        raise InputError(f"layout pairs: no MASK_ file for {', '.join(unmatched[:5])}", root)
    return [Case(strip_suffix(key[1]), img, masks[key]) for key, img in images.items()]


def _rel(root: Path, text: str) -> Path:
    return (root / text.removeprefix("./")).resolve() if not Path(text).is_absolute() else Path(text)


def _msd(root: Path) -> list[Case]:
    spec = root / "dataset.json"
    if not spec.is_file():
        raise InputError("layout msd: no dataset.json", root)
    training = _load_json(spec).get("training")
    if not isinstance(training, list):
        raise InputError("layout msd: dataset.json has no 'training' list", spec)
    cases = []
    for n, item in enumerate(training):
        if not isinstance(item, dict) or "image" not in item:
            raise InputError(f"layout msd: training entry {n} has no 'image'", spec)
        image = _rel(root, str(item["image"]))
        label = _rel(root, str(item["label"])) if item.get("label") else None
        cases.append(Case(strip_suffix(image.name), image, label))
    return cases


def _nnunet(root: Path) -> list[Case]:
    spec = root / "dataset.json"
    data = _load_json(spec) if spec.is_file() else {}
    ending = str(data.get("file_ending", ".nii.gz"))
    channels = data.get("channel_names") or data.get("modality") or {"0": "CT"}
    if len(channels) != 1:
        raise InputError(f"layout nnunet: {len(channels)} input channels; lungseg reads one CT channel",
                         spec)
    images_dir, labels_dir = root / "imagesTr", root / "labelsTr"
    if not images_dir.is_dir():
        raise InputError("layout nnunet: no imagesTr/ folder", root)
    cases = []
    for img in sorted(images_dir.glob(f"*_0000{ending}")):
        name = img.name[: -len(f"_0000{ending}")]
        label = labels_dir / f"{name}{ending}"
        if not label.exists():
            raise InputError(f"layout nnunet: case {name} has no label {label.name} in labelsTr/", root)
        cases.append(Case(name, img, label))
    return cases


def _csv(root: Path) -> list[Case]:
    if root.is_dir():
        found = sorted(root.glob("*.csv"))
        if len(found) != 1:
            raise InputError(f"layout csv: expected one .csv file in the folder, found {len(found)}", root)
        root = found[0]
    try:
        with open(root, newline="", encoding="utf-8-sig") as f:
            rows = list(csv.DictReader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise InputError(f"not a readable CSV file ({exc})", root) from None
    if not rows or "image" not in rows[0]:
        raise InputError("layout csv: needs a header row with columns image,label (and optionally name)",
                         root)
    cases = []
    for n, row in enumerate(rows, start=2):
        if not (row.get("image") or "").strip():
            raise InputError(f"layout csv: line {n} has no image", root)
        image = _rel(root.parent, row["image"].strip())
        label = _rel(root.parent, row["label"].strip()) if (row.get("label") or "").strip() else None
        name = (row.get("name") or "").strip() or strip_suffix(image.name)
        cases.append(Case(name, image, label))
    return cases


def _folders(root: Path) -> list[Case]:
    images, labels = root / "images", root / "labels"
    if not images.is_dir():
        raise InputError("layout folders: no images/ folder", root)
    cases = []
    for img in sorted(p for p in images.iterdir() if is_volume_file(p)):
        label = labels / img.name
        if not label.exists():
            raise InputError(f"layout folders: {img.name} has no label of the same name in labels/", root)
        cases.append(Case(strip_suffix(img.name), img, label))
    return cases
