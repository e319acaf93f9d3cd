"""Headless plots (matplotlib Agg): F1 across a sweep's varied values, and loss curves."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from core.fileio import read_json
from core.rundir import RunDir, clean_progress


def _short(value: Any) -> str:
    text = str(value)
    return text.rsplit("/", 1)[-1].replace("scratch:", "")


def plot_f1(rows: list[dict[str, Any]], varied: list[str], out: Path,
            metric: str = "exact.f1") -> Path:
    """Grouped bars: x = the first varied key, bars = the others, one panel per epoch count."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panel_key = "train.num_epochs" if "train.num_epochs" in varied else None
    rest = [k for k in varied if k != panel_key]
    x_key = rest[0] if rest else None
    hue_keys = rest[1:]
    panels = sorted({r.get(panel_key) for r in rows}, key=str) if panel_key else [None]
    fig, axes = plt.subplots(1, len(panels), figsize=(max(6, 5 * len(panels)), 4.5),
                             squeeze=False, sharey=True)
    for ax, pv in zip(axes[0], panels, strict=True):
        sel = [r for r in rows if panel_key is None or r.get(panel_key) == pv]
        xs = sorted({_short(r.get(x_key)) if x_key else r["run_id"] for r in sel})
        hues = sorted({", ".join(f"{k.split('.')[-1]}={r.get(k)}" for k in hue_keys)
                       for r in sel})
        width = 0.8 / max(1, len(hues))
        for h_i, hue in enumerate(hues):
            heights = []
            for x in xs:
                match = [r for r in sel
                         if (_short(r.get(x_key)) if x_key else r["run_id"]) == x
                         and ", ".join(f"{k.split('.')[-1]}={r.get(k)}" for k in hue_keys) == hue]
                vals = [m[metric] for m in match if isinstance(m.get(metric), (int, float))]
                heights.append(sum(vals) / len(vals) if vals else 0.0)
            pos = [i + h_i * width - 0.4 + width / 2 for i in range(len(xs))]
            ax.bar(pos, heights, width=width, label=hue or None)
        ax.set_xticks(range(len(xs)))
        ax.set_xticklabels(xs, rotation=30, ha="right", fontsize=8)
        ax.set_title(f"{panel_key.split('.')[-1]} = {pv}" if panel_key else "")
        ax.set_ylim(0, 1)
        ax.grid(axis="y", alpha=0.3)
    axes[0][0].set_ylabel(metric)
    if hue_keys:
        axes[0][-1].legend(fontsize=8)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def plot_losses(run_dirs: list[Path], out: Path) -> tuple[Path, list[str]]:
    """Training loss against step for each run (from progress.json); returns skipped runs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    skipped = []
    for d in run_dirs:
        try:
            hist = (clean_progress(read_json(RunDir(d).progress)) or {}).get("history", [])
        except ValueError:
            hist = []
        if not hist:
            skipped.append(d.name)
            continue
        ax.plot([h["step"] for h in hist], [h["loss"] for h in hist], label=d.name,
                linewidth=1.2)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("training loss")
    ax.grid(alpha=0.3)
    if len(run_dirs) > len(skipped):
        ax.legend(fontsize=7)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out, skipped
