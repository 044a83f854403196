"""Draw docs/house.png, the picture of melset's house, from the plan in tests/test_architecture.py.

    python docs/house.py

One row a layer, in the data's order from the top; an arrow from each layer to the next is
the data's path (imports point the other way: a room imports only from the rooms above it).
"""

from __future__ import annotations

import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from test_architecture import LAYERS  # noqa: E402

PACKAGES = {p.name for p in (ROOT / "src" / "melset").iterdir() if (p / "__init__.py").exists()}
# the order within a layer, as the docs list them
ORDER = [
    "vocab", "errors", "system", "outputs", "melscale", "recipe", "location", "catalog", "audio", "features", "track", "store",
    "engines", "extract", "train_config", "runs", "dataset", "model", "augment", "export", "exportdir", "card", "plots",
    "train", "evaluate", "predict", "report", "cli",
]  # fmt: skip
GROUPS = [  # (first layer, last layer, name, colour)
    (0, 2, "words and the recipe", "#eef2f7"),
    (3, 6, "one track: which, decoded, its matrix", "#eaf5ea"),
    (7, 9, "many tracks: the store and the job", "#fdf3e1"),
    (10, 13, "consumers: datasets, training, pages", "#f6eaf5"),
    (14, 14, "the command", "#eeeeee"),
]


def draw(path: Path) -> None:
    width, row = 10.0, 0.62
    fig, ax = plt.subplots(figsize=(8.4, row * len(LAYERS) + 0.4))
    ax.set_xlim(0, width)
    ax.set_ylim(-row * len(LAYERS), 0.5)
    ax.axis("off")
    for first, last, name, colour in GROUPS:
        top, bottom = -first * row + 0.22, -(last + 1) * row + 0.16
        ax.add_patch(FancyBboxPatch((0.05, bottom), width - 0.1, top - bottom, boxstyle="round,pad=0.02",
                                    fc=colour, ec="none"))  # fmt: skip
        ax.text(width - 0.12, top - 0.05, name, ha="right", va="top", fontsize=7.5, color="#555555", style="italic")
    for i, layer in enumerate(LAYERS):
        rooms = sorted(layer, key=ORDER.index)
        y = -i * row - 0.12
        box_w, gap = 1.45, 0.1
        x0 = (width - len(rooms) * box_w - (len(rooms) - 1) * gap) / 2
        for j, room in enumerate(rooms):
            x = x0 + j * (box_w + gap)
            label = f"{room}/" if room in PACKAGES else f"{room}.py"
            ax.add_patch(FancyBboxPatch((x, y - 0.17), box_w, 0.34, boxstyle="round,pad=0.03", fc="white",
                                        ec="#35618f" if room in PACKAGES else "#888888", lw=1.2))  # fmt: skip
            ax.text(x + box_w / 2, y, label, ha="center", va="center", fontsize=8, family="monospace")
        if i + 1 < len(LAYERS):
            mid = width / 2
            ax.add_patch(FancyArrowPatch((mid, y - 0.2), (mid, y - row + 0.2), arrowstyle="-|>", mutation_scale=9,
                                         color="#444444", lw=1))  # fmt: skip
    ax.text(0.12, 0.45, "the data's path, top to bottom; a room imports only from the rooms above it",
            fontsize=8, va="top", color="#333333")  # fmt: skip
    fig.savefig(path, dpi=130, bbox_inches="tight")
    plt.close(fig)


if __name__ == "__main__":
    draw(ROOT / "docs" / "house.png")
    print(ROOT / "docs" / "house.png")
