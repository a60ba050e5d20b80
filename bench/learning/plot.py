"""Plots a learning report: held-out success per family, before and after evolution."""
import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

report = json.load(open(sys.argv[1]))
rows = report["families"] + [report["overall"]]
names = [r["family"] for r in rows]
before = [100 * r["before"] for r in rows]
after = [100 * r["after"] for r in rows]
x = range(len(rows))
fig, ax = plt.subplots(figsize=(max(6, len(rows) * 0.9), 4))
ax.bar([i - 0.2 for i in x], before, 0.4, label="before")
ax.bar([i + 0.2 for i in x], after, 0.4, label="after evolution")
ax.set_xticks(list(x))
ax.set_xticklabels(names, rotation=30, ha="right")
ax.set_ylabel("held-out tasks passed (%)")
ax.set_ylim(0, 100)
ax.set_title(f"{report['model']}: overall p = {report['overall']['p_value']:.3f} (exact McNemar)")
ax.legend()
fig.tight_layout()
fig.savefig(sys.argv[2], dpi=120)
