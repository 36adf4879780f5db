"""Inference speed and memory: `lungseg predict` against the reference recipe, same run.

Rows, each in a FRESH process (so peak RSS is its own), on a 512x512xN phantom (default
N=300, also 600 for memory, and the same phantom at twice its in-plane resolution,
1024x1024xN, the matrix of ultra-high-resolution and photon-counting lung protocols) and, when
../shared/data is present, the shared real chests:

- reference recipe: the MONAI tutorial's inference (Orientationd + Spacingd to 1.5x1.5x2.0 mm
  on the whole scan, 96^3 sliding windows at overlap 0.75, sw_batch_size 4, constant
  blending, Invertd of the probabilities to the input grid, argmax), then lungseg's
  post-processing so the labels are comparable; the speed-ups are against this row. The
  shipped model was trained at 2.5 mm, so this row's Dice says nothing; the same recipe at
  the model's 2.5 mm is the accuracy reference (second row);
- default: what `lungseg predict IMAGE -o MASK` runs (`batch.predict_files`: read, segment,
  write the mask, quantify, quality checks with the classical agreement check, write the
  `.qc.json`), on the NIfTI and on the same scan as a DICOM folder (with the DICOM SEG it also
  writes by default, and with `--no-seg`: the same outputs as the NIfTI row);
- onnxruntime: the same with `--backend onnxruntime` and the exported `.onnx`;
- classical: `--method classical`.

Times are from the input path to the files written, after imports (the reference's and the
CLI's imports are the same); `CPU s` is that part's CPU time over all threads (steadier than
wall time on a shared machine); `process s` adds the interpreter and imports. Dice: against the
phantom's truth; on real chests (no truth) against the default's mask.

    python bench/infer.py [--slices 300] [--repeat 3] [--no-real] [--no-600] [--no-1024] [--threads 2]
        [--device cpu]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SHARED = HERE.parent.parent / "shared" / "data"
REAL = ("real_unlabeled/chest_4dct_phase00.nii.gz", "real_unlabeled/chest_lidc0314_thin.nii.gz",
        "real_unlabeled/chest_lungpetctdx_a0001_5mm.nii.gz")


def reference_predict(image, device: str = "cpu", spacing=None):
    """The MONAI tutorial's inference with the shipped model, then lungseg's post-processing.

    `spacing`: the working spacing (default: the model's own, 2.5 mm); the tutorial's is
    (1.5, 1.5, 2.0)."""
    import copy

    import numpy as np
    import torch
    from monai.data import MetaTensor
    from monai.inferers import sliding_window_inference

    from lungseg.core.anatomy import body_hull, body_midline_x
    from lungseg.core.volume import Volume
    from lungseg.inference.classical import central_airways
    from lungseg.inference.postprocess import fill_indentations, postprocess
    from lungseg.inference.predictor import DEFAULT_MODEL
    from lungseg.networks import load_model
    from lungseg.transforms import DEFAULT_PREPROCESSING, infer_transforms, to_metatensor

    model, settings = load_model(DEFAULT_MODEL, device)
    pre = {**DEFAULT_PREPROCESSING, **settings.get("preprocessing", {})}
    pre = infer_transforms({**pre, "spacing": tuple(spacing)} if spacing else pre)
    x = pre({"image": to_metatensor(image)})["image"]
    with torch.no_grad():
        logits = sliding_window_inference(x.as_tensor()[None].to(device), (96, 96, 96), 4, model,
                                          overlap=0.75, mode="constant")
    prob = torch.softmax(logits.float(), dim=1)[0].cpu()
    out = MetaTensor(prob, meta=copy.deepcopy(x.meta))
    out.applied_operations = copy.deepcopy(x.applied_operations)
    back = pre.inverse({"image": out})["image"]
    labels = np.asarray(back.as_tensor().argmax(0).numpy(), np.uint8)
    midline = body_midline_x(image.array, image.affine)
    labels = postprocess(labels, image.affine, midline_x=midline, hu=image.array,
                         hull=body_hull(image.array, image.affine))
    airways = central_airways(image, midline_x=midline)
    labels = fill_indentations(labels, image.affine, keep_out=airways)
    labels[airways] = 0
    return Volume(labels, image.affine.copy())


def one(cfg: dict) -> dict:
    """Run one row in this (fresh) process; returns seconds, peak RSS and where the mask is."""
    import torch

    torch.set_num_threads(cfg["threads"])
    import monai.inferers  # noqa: F401  (imports are the same for every row: not timed)

    import lungseg.inference.predictor  # noqa: F401
    from lungseg.batch import predict_files
    from lungseg.io.volumes import read_volume, write_volume

    out = Path(cfg["out"])
    t0, c0 = time.perf_counter(), time.process_time()
    if cfg["row"] == "reference":
        write_volume(reference_predict(read_volume(cfg["input"]), cfg["device"], cfg.get("spacing")), out)
    else:
        res = predict_files([cfg["input"]], out, model=cfg.get("model"), method=cfg.get("method", "unet"),
                            device=cfg["device"], progress=False, settings={"backend": cfg.get("backend", "torch")},
                            seg=cfg.get("seg", True))
        if res[0].error:
            raise SystemExit(res[0].error)
    return {"seconds": time.perf_counter() - t0, "cpu_s": time.process_time() - c0,
            "rss_gib": peak_rss_gib(), "mask": str(out)}


def peak_rss_gib() -> float:
    """This process's peak resident memory. /proc's VmHWM, not getrusage's ru_maxrss, which
    Linux carries over from the parent through fork + exec (the parent holds the phantoms)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def run_row(cfg: dict) -> dict:
    t0 = time.perf_counter()
    p = subprocess.run([sys.executable, __file__, "--one", json.dumps(cfg)], capture_output=True, text=True,
                       env={**os.environ, "PYTHONWARNINGS": "ignore"})
    if p.returncode != 0:
        print(p.stderr[-3000:], file=sys.stderr)
        raise SystemExit(f"row {cfg['row']} on {cfg['input']} failed")
    r = json.loads(p.stdout.strip().splitlines()[-1])
    r["process_s"] = time.perf_counter() - t0
    return r


def dice(a_path: str, b_path: str) -> float:
    import numpy as np

    from lungseg.io.volumes import read_volume

    a, b = read_volume(a_path).array > 0, read_volume(b_path).array > 0
    return float(2 * np.count_nonzero(a & b) / max(1, np.count_nonzero(a) + np.count_nonzero(b)))


def phantom(tmp: Path, slices: int, dicom: bool) -> tuple[Path, Path, Path | None]:
    """A 512x512x`slices` phantom (320 mm tall) as NIfTI (+ its truth, + a DICOM folder)."""
    sys.path.insert(0, str(HERE.parent / "tests"))
    from lungseg import make_phantom
    from lungseg.io.volumes import write_volume

    image, truth = make_phantom(seed=123, size=512, slice_thickness=320.0 / slices, fov_z=320.0)
    img = write_volume(image, tmp / f"phantom{slices}.nii.gz")
    tru = write_volume(truth, tmp / f"phantom{slices}_truth.nii.gz")
    folder = None
    if dicom:
        from dicom_factory import write_series

        folder = tmp / f"phantom{slices}_dicom"
        write_series(folder, image.array, image.affine)
    return Path(img), Path(tru), folder


def upsampled(tmp: Path, image: Path, truth: Path) -> tuple[Path, Path]:
    """The phantom at twice its in-plane resolution over the same field of view (image linear,
    truth nearest): a 1024^2 matrix, as ultra-high-resolution and photon-counting lung protocols
    reconstruct."""
    import numpy as np
    from scipy import ndimage

    from lungseg.core.volume import Volume
    from lungseg.io.volumes import read_volume, write_volume

    out = []
    for path, order in ((image, 1), (truth, 0)):
        v = read_volume(path)
        a = ndimage.zoom(np.asarray(v.array, np.float32), (2, 2, 1), order=order, grid_mode=True, mode="nearest")
        aff = v.affine.copy()
        aff[:3, :2] /= 2  # half the pixel; the first pixel's centre a quarter of an old one back
        aff[:3, 3] = v.affine[:3, 3] - 0.25 * (v.affine[:3, 0] + v.affine[:3, 1])
        name = Path(path).name.split(".")[0] + "_1024.nii.gz"
        out.append(Path(write_volume(Volume(np.round(a).astype(np.asarray(v.array).dtype), aff), tmp / name)))
    return out[0], out[1]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--slices", type=int, default=300)
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--device", default="cpu")
    p.add_argument("--no-real", action="store_true", help="skip the shared real chests")
    p.add_argument("--no-600", action="store_true", help="skip the 512x512x600 memory row")
    p.add_argument("--no-1024", action="store_true", help="skip the 1024x1024xN memory row")
    p.add_argument("--repeat", type=int, default=3,
                   help="runs of each phantom row, interleaved; the table gives their median (default 3)")
    p.add_argument("--real-reference", action="store_true", help="also run the reference on the real chests (slow)")
    p.add_argument("--one", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.one:
        print(json.dumps(one(json.loads(args.one))))
        return
    from lungseg.inference.runtime import export_onnx

    tmp = Path(tempfile.mkdtemp(prefix="lungseg_bench_"))
    onnx = export_onnx(None, tmp / "default.onnx")
    base = {"threads": args.threads, "device": args.device}
    img, truth, dcm = phantom(tmp, args.slices, dicom=True)
    rows = []

    def measured(name, row_kind, inp, ref_mask, group, kw, runs):
        r = dict(runs[0])
        for key in ("seconds", "cpu_s", "process_s"):
            r[key] = statistics.median(x[key] for x in runs)
        r["rss_gib"] = max(x["rss_gib"] for x in runs)
        r["all_seconds"] = [x["seconds"] for x in runs]
        r["name"], r["dice"] = name, dice(r["mask"], str(ref_mask)) if ref_mask else None
        r["group"], r["kind"] = group, row_kind
        rows.append(r)
        spread = "" if len(runs) == 1 else " (runs: " + ", ".join(f"{x:.1f}" for x in r["all_seconds"]) + ")"
        print(f"  {name}: {r['seconds']:.1f} s{spread}, {r['rss_gib']:.2f} GiB", file=sys.stderr, flush=True)
        return r

    def run_once(row_kind, inp, kw):
        return run_row({**base, "row": row_kind, "input": str(inp), "out": str(tmp / f"{next(counter)}.nii.gz"), **kw})

    def row(name, row_kind, inp, ref_mask, group="phantom", **kw):
        return measured(name, row_kind, inp, ref_mask, group, kw, [run_once(row_kind, inp, kw)])

    counter = itertools.count()
    shape = f"512x512x{args.slices}"
    # the phantom rows, run round-robin `--repeat` times (a load change hits every row alike)
    phantom_rows = [
        (f"reference recipe (1.5x1.5x2.0 mm), phantom {shape}", "reference", img, truth, {"spacing": [1.5, 1.5, 2.0]}),
        (f"reference at the model's 2.5 mm, phantom {shape}", "reference", img, truth, {}),
        (f"lungseg predict, phantom {shape}", "unet", img, truth, {}),
        (f"lungseg predict, phantom {shape} as {args.slices} DICOM files (+ DICOM SEG)", "unet", dcm, truth, {}),
        (f"lungseg predict --no-seg, phantom {shape} as {args.slices} DICOM files", "unet", dcm, truth,
         {"seg": False}),
        (f"lungseg predict --backend onnxruntime, phantom {shape}", "unet", img, truth,
         {"model": str(onnx), "backend": "onnxruntime"}),
        (f"lungseg predict --method classical, phantom {shape}", "unet", img, truth, {"method": "classical"}),
    ]
    runs = [[] for _ in phantom_rows]
    for _ in range(max(1, args.repeat)):
        for i, (_name, kind, inp, _ref, kw) in enumerate(phantom_rows):
            runs[i].append(run_once(kind, inp, kw))
    for (name, kind, inp, ref, kw), rr in zip(phantom_rows, runs, strict=True):
        measured(name, kind, inp, ref, "phantom", kw, rr)
    if not args.no_600:
        img6, truth6, _ = phantom(tmp, 600, dicom=False)
        row("lungseg predict, phantom 512x512x600", "unet", img6, truth6, group="600")
    if not args.no_1024:
        img10, truth10 = upsampled(tmp, img, truth)
        row(f"lungseg predict, phantom 1024x1024x{args.slices} (the phantom above, in-plane x2)", "unet", img10,
            truth10, group="1024")
    real_rows = []
    if not args.no_real and SHARED.is_dir():
        for rel in REAL:
            path = SHARED / rel
            if not path.is_file():
                continue
            name = path.name.replace(".nii.gz", "")
            d = row(f"lungseg predict, {name}", "unet", path, None, group=name)
            real_rows.append(d)
            for label, kw in (("--backend onnxruntime", {"model": str(onnx), "backend": "onnxruntime"}),
                              ("--method classical", {"method": "classical"})):
                r = row(f"lungseg predict {label}, {name}", "unet", path, d["mask"], group=name, **kw)
                real_rows.append(r)
            if args.real_reference:
                real_rows.append(row(f"reference, {name}", "reference", path, d["mask"], group=name))
    machine = f"{os.cpu_count()} cores, {platform.machine()}, {platform.processor() or ''}".strip(", ")
    print(f"\nInference, {args.threads} threads, device {args.device}, {machine}; "
          f"load average at the end {os.getloadavg()[0]:.1f}; phantom rows: median of {max(1, args.repeat)} "
          f"interleaved runs, other rows: one run\n")
    refs = {}
    for r in rows:
        if r["kind"] == "reference":
            refs.setdefault(r["group"], r["seconds"])  # the first reference of a group: the recipe
    ref25 = rows[1]["seconds"]  # the recipe at the model's spacing
    print("| configuration | wall s | CPU s | process s | speed-up vs reference recipe | vs 2.5 mm reference "
          "| peak RSS (GiB) | Dice |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        d = "-" if r["dice"] is None else f"{r['dice']:.4f}" + (" vs default" if r in real_rows else " vs truth")
        up = f"{refs[r['group']] / r['seconds']:.1f}x" if r["group"] in refs else "-"
        up25 = f"{ref25 / r['seconds']:.1f}x" if r["group"] == "phantom" else "-"
        print(f"| {r['name']} | {r['seconds']:.1f} | {r['cpu_s']:.1f} | {r['process_s']:.1f} | {up} | {up25} "
              f"| {r['rss_gib']:.2f} | {d} |")
    def runs_of(r):
        return ", ".join(f"{x:.1f}" for x in r["all_seconds"])

    print(f"\nDICOM folder / NIfTI, same phantom, same outputs (--no-seg): "
          f"{rows[4]['seconds'] / rows[2]['seconds']:.2f}x; with the DICOM SEG as well: "
          f"{rows[3]['seconds'] / rows[2]['seconds']:.2f}x (runs: NIfTI {runs_of(rows[2])}; DICOM --no-seg "
          f"{runs_of(rows[4])}; DICOM + SEG {runs_of(rows[3])})")


if __name__ == "__main__":
    main()
