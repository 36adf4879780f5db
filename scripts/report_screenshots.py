"""Screenshots of lungseg's HTML reports for the docs: headless Chromium, then scaled and
reduced to a palette so each PNG stays small (docs/images/, < 300 KB).

    python scripts/report_screenshots.py masks/case.html docs/images/report_case.png --height 3000
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import tempfile
from pathlib import Path

from PIL import Image


def shoot(page: Path, out: Path, width: int = 1200, height: int = 2600, scale: float = 0.75,
          colours: int = 256) -> Path:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        raise SystemExit("chromium not found (apt-get install chromium)")
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "raw.png"
        subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                        f"--user-data-dir={tmp}/profile", f"--screenshot={raw}",
                        f"--window-size={width},{height}", page.resolve().as_uri()],
                       check=True, capture_output=True, timeout=120)
        img = Image.open(raw).convert("RGB")
    img = img.resize((int(img.width * scale), int(img.height * scale)), Image.LANCZOS)
    img = img.quantize(colours, method=Image.Quantize.FASTOCTREE, dither=Image.Dither.NONE)
    out.parent.mkdir(parents=True, exist_ok=True)
    img.save(out, optimize=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("page", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--width", type=int, default=1200)
    ap.add_argument("--height", type=int, default=2600)
    ap.add_argument("--scale", type=float, default=0.75)
    ap.add_argument("--colours", type=int, default=256)
    a = ap.parse_args()
    out = shoot(a.page, a.out, a.width, a.height, a.scale, a.colours)
    print(f"{out}: {out.stat().st_size / 1024:.0f} KB")


if __name__ == "__main__":
    main()
