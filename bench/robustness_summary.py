"""Compact tables of `bench/real_robustness.py` results, for docs/model.md and docs/model_notes.md.

Crop consistency as the worst binary Dice over the three levels of each slab size, with the
worst right/left agreement; then pathology inside the lung, central airways inside it, and the
lung found in scans that hold none.

    python bench/robustness_summary.py runs/real_robustness/results.json
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict


def summary(path: str) -> str:
    data = json.loads(open(path).read())
    lines = []
    for method, res in data["results"].items():
        chests = [c["whole"]["chest"] for c in res["chests"]]
        table: dict = defaultdict(dict)
        for c in res["chests"]:
            for crop in c["crops"]:
                kind = crop["crop"].split("@")[0]
                prev = table[kind].get(crop["chest"])
                cell = (crop["binary_dice"] or 0.0, crop["rl_agreement"] if crop["rl_agreement"] is not None else 0.0)
                table[kind][crop["chest"]] = cell if prev is None else (min(prev[0], cell[0]), min(prev[1], cell[1]))
        lines += [f"**{method}** — binary Dice / right-left agreement vs the whole-scan mask (worst of 3 levels for slabs)", "",
                  "| crop | " + " | ".join(chests) + " |", "|---|" + "---:|" * len(chests)]
        for kind, row in table.items():
            lines.append(f"| {kind} | " + " | ".join(f"{row[c][0]:.3f} / {row[c][1]:.3f}" for c in chests) + " |")
        lines += ["", "| pathology | label | inside the lung mask |", "|---|---|---:|"]
        for p in res.get("pathology", []):
            lines.append(f"| {p['case']} | {p['label']} | {p['inside_lung']:.3f} |")
        lines += ["", "| chest | airway volume (mL) | airway inside the lung mask | trachea inside |", "|---|---:|---:|---:|"]
        for a in res.get("airways", []):
            lines.append(f"| {a['chest']} | {a['airway_ml']:.1f} | {a['inside_lung']:.3f} | {a['trachea_inside_lung']:.3f} |")
        if res.get("no_lung"):
            lines += ["", "| scan with no lung | mL called lung |", "|---|---:|"]
            lines += [f"| {r['case']} | {'error' if r['lung_ml'] is None else format(r['lung_ml'], '.1f')} |"
                      for r in res["no_lung"]]
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    print(summary(sys.argv[1]))
