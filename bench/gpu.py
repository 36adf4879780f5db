"""`bench/infer.py` on CUDA: reference, default, onnxruntime (CUDA provider where installed), classical.

Without a CUDA device it says so and exits 0 (nothing to measure). ONNX Runtime from PyPI
(`onnxruntime`) has only the CPU provider; install `onnxruntime-gpu` instead for its CUDA
provider (the onnxruntime row then runs on the GPU; the script prints which providers exist).

    python bench/gpu.py [--slices 300] [--no-real] [--no-600]
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def main() -> int:
    import torch

    if not torch.cuda.is_available():
        print("bench/gpu.py: no CUDA device on this machine; nothing to measure (use bench/infer.py for the CPU)")
        return 0
    import onnxruntime as ort

    print(f"GPU: {torch.cuda.get_device_name(0)}; ONNX Runtime providers: {', '.join(ort.get_available_providers())}")
    infer = Path(__file__).resolve().parent / "infer.py"
    return subprocess.call([sys.executable, str(infer), "--device", "cuda", *sys.argv[1:]])


if __name__ == "__main__":
    sys.exit(main())
