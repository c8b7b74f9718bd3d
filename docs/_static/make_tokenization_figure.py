"""Draw the CaLMFlow tokenization figure of the docs index (docs/_static/tokenization.png).

Run from anywhere: ``python docs/_static/make_tokenization_figure.py``. The PNG is committed; rerun after edits.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

OUT = Path(__file__).with_name("tokenization.png")
PROMPT = "#c7d7ee"
SPACE = ["#fdd49e", "#fdbb84", "#fc8d59", "#e34a33"]  # one colour per time point
GREY = "#555555"
FS = 11  # base font size


def box(ax, x, y, w, h, text, color, *, fontsize=FS):
    ax.add_patch(
        FancyBboxPatch(
            (x, y), w, h, boxstyle="round,pad=0.02,rounding_size=0.08", fc=color, ec="#333333", lw=0.8
        )
    )
    ax.text(x + w / 2, y + h / 2, text, ha="center", va="center", fontsize=fontsize)


def arrow(ax, start, end):
    ax.add_patch(FancyArrowPatch(start, end, arrowstyle="-|>", mutation_scale=10, color=GREY, lw=1.0))


def panel_tokens(ax):
    """(a) the token sequence: prompt words, then N states x K space tokens; the causal LM predicts the next one."""
    ax.set_xlim(0, 19.2)
    ax.set_ylim(1.9, 7.2)
    ax.axis("off")
    ax.set_title(
        "(a) What the causal language model reads: a prompt, then the path as tokens (N = 4 time points, K = 2)",
        fontsize=FS + 1,
        loc="left",
    )
    words = ["Generate", "a", "NK", "cell", "stimulated", "with", "IFNB+TNF", ":"]
    widths = [1.5, 0.45, 0.6, 0.75, 1.65, 0.75, 1.65, 0.4]
    x, y, h = 0.1, 3.0, 0.8
    prompt_x = []
    for wd, wdt in zip(words, widths, strict=True):
        box(ax, x, y, wdt, h, wd, PROMPT, fontsize=FS - 2)
        prompt_x.append(x + wdt / 2)
        x += wdt + 0.08
    ax.text(
        0.1 + (x - 0.1) / 2, y - 0.5, "prompt, from obs columns", ha="center", fontsize=FS - 1, color=GREY
    )
    x += 0.25
    tok_x = []
    for i in range(4):
        start = x
        for k in range(2):
            box(ax, x, y, 0.95, h, f"z(t{i})$_{k + 1}$", SPACE[i], fontsize=FS - 2)
            tok_x.append(x + 0.475)
            x += 1.0
        ax.text((start + x - 0.05) / 2, y - 0.5, f"time {i}", ha="center", fontsize=FS - 1, color=GREY)
        x += 0.15
    right = x - 0.15
    box(
        ax,
        0.1,
        4.6,
        right - 0.1,
        0.9,
        "GPT-NeoX (Pythia) backbone: causal attention, each token sees only those to its left",
        "#e5e5e5",
    )
    for tx in prompt_x + tok_x:
        arrow(ax, (tx, y + h), (tx, 4.6))
    box(
        ax,
        0.1,
        6.1,
        right - 0.1,
        0.8,
        r"variational head: a latent $\sim \mathcal{N}(\mu, \tau\sigma^2)$ $\rightarrow$ the next space token",
        "#d9f0d3",
    )
    for tx in tok_x[:-1]:
        arrow(ax, (tx, 5.5), (tx, 6.1))


def panel_path(ax):
    """(b) a straight path from a source cell to a target cell, cut into N time points."""
    rng = np.random.default_rng(3)
    noise = rng.normal(0, 0.55, (120, 2))
    target = rng.normal(0, 0.18, (120, 2)) * [1.4, 0.7] + [3.2, 1.6]
    ax.scatter(*noise.T, s=8, c="#bbbbbb", lw=0, label="source: noise, or control cells")
    ax.scatter(*target.T, s=8, c="#9ecae1", lw=0, label="real perturbed cells")
    x0, x1 = np.array([0.35, -0.35]), np.array([3.0, 1.75])
    ts = np.linspace(0, 1, 4)
    pts = x0 + ts[:, None] * (x1 - x0)
    ax.plot(*pts.T, color=GREY, lw=1, ls="--", zorder=2)
    for i, (p, t) in enumerate(zip(pts, ts, strict=True)):
        ax.scatter(*p, s=110, color=SPACE[i], ec="#333333", lw=0.8, zorder=3)
        offset = (10, -14) if i < 3 else (-95, 8)
        ax.annotate(f"z(t{i}), t = {t:.2f}", p, xytext=offset, textcoords="offset points", fontsize=FS - 1)
    ax.set_title("(b) One cell's straight path in PCA space", fontsize=FS + 1, loc="left")
    ax.set_xlabel("PC1", fontsize=FS)
    ax.set_ylabel("PC2", fontsize=FS)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_xlim(-1.8, 4.4)
    ax.set_ylim(-1.8, 2.7)
    ax.legend(loc="lower right", fontsize=FS - 2, frameon=False, markerscale=2)


def panel_text(ax):
    ax.axis("off")
    lines = [
        (
            "Training",
            "the path from a source point to a real cell is known; the model learns to predict every next "
            "space token from the true tokens before it (teacher forcing, no ODE solver).",
        ),
        (
            "Generation",
            "start from z(t0) (noise, or one of your control cells) and the prompt; predict z(t1), "
            "append it, and so on until z(tN-1): the generated cell, mapped back to genes.",
        ),
        (
            "New conditions",
            "an unseen combination, such as NK cells with IFNB+TNF, is reached by writing its prompt.",
        ),
    ]
    y = 0.95
    for head, body in lines:
        ax.text(0.0, y, head, fontsize=FS + 1, weight="bold", va="top", transform=ax.transAxes)
        ax.text(
            0.0, y - 0.09, _wrap(body, 58), fontsize=FS, va="top", transform=ax.transAxes, linespacing=1.4
        )
        y -= 0.34


def _wrap(text: str, width: int) -> str:
    import textwrap

    return "\n".join(textwrap.wrap(text, width))


def main() -> None:
    fig = plt.figure(figsize=(10, 7.6), dpi=150)
    gs = fig.add_gridspec(2, 2, height_ratios=[1.0, 1.15], width_ratios=[1, 1.15], hspace=0.12, wspace=0.08)
    panel_tokens(fig.add_subplot(gs[0, :]))
    panel_path(fig.add_subplot(gs[1, 0]))
    panel_text(fig.add_subplot(gs[1, 1]))
    fig.savefig(OUT, bbox_inches="tight", facecolor="white")
    print(f"wrote {OUT.name}")


if __name__ == "__main__":
    main()
