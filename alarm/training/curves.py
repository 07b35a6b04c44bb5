"""The training curves as a PNG (train/val loss, target-token accuracy, learning rate) from metrics.jsonl's records."""

from __future__ import annotations

from pathlib import Path

from alarm import jsonl


def read_metrics(path: Path) -> list[dict]:
    """The records of a metrics.jsonl, [] when there is none."""
    return jsonl.read(path) if path.exists() else []


def examples_per_s(train: list[dict]) -> float:
    """The run's training throughput from its train records (each `examples_per_s` over the time since the one
    before, which includes the validations, checkpoints and reports in between), the first step left out (start-up):
    examples over seconds, the harmonic mean of the rates. Their plain mean hides the slow steps: four steps at 40
    examples/s and one at 6.7 average 33, where the five took 2 s for 40 examples (20 examples/s)."""
    rates = [h["examples_per_s"] for h in train[1:] if h.get("examples_per_s")]
    return len(rates) / sum(1 / r for r in rates) if rates else 0.0


def plot_curves(records: list[dict], out: Path) -> Path:
    """Loss (train and val), target-token accuracy and learning rate against the optimizer step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def series(kind: str, key: str) -> tuple[list, list]:
        pts = [(r["step"], r[key]) for r in records if r.get("kind") == kind and r.get(key) is not None]
        return [p[0] for p in pts], [p[1] for p in pts]

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    for kind, style in (("train", "-"), ("val", "o-")):
        axes[0].plot(*series(kind, "loss"), style, label=kind, markersize=3)
        axes[1].plot(*series(kind, "accuracy"), style, label=kind, markersize=3)
    axes[2].plot(*series("train", "lr"), "-")
    for ax, title in zip(axes, ("loss (target tokens)", "target-token accuracy", "learning rate"), strict=True):
        ax.set_title(title)
        ax.set_xlabel("optimizer step")
        ax.grid(alpha=0.3)
    axes[0].legend()
    axes[1].legend()
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
