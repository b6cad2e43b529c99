"""Persistence-diagram figures: teacher vs student, one panel per homology dimension."""

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402


def plot_diagrams(teacher: list[torch.Tensor], student: list[torch.Tensor], dims=(0, 1)):
    """teacher[d], student[d]: (K_d, 2) finite (birth, death) pairs. Returns a matplotlib Figure."""
    fig, axes = plt.subplots(1, len(dims), figsize=(4 * len(dims), 4), squeeze=False)
    for ax, dim, t, s in zip(axes[0], dims, teacher, student):
        t, s = t.detach().cpu(), s.detach().cpu()
        top = max([1e-6] + [float(d.max()) for d in (t, s) if len(d)]) * 1.05
        ax.plot([0, top], [0, top], color="grey", linewidth=0.8)
        ax.scatter(t[:, 0], t[:, 1], s=10, alpha=0.6, label=f"teacher ({len(t)})")
        ax.scatter(s[:, 0], s[:, 1], s=10, alpha=0.6, marker="x", label=f"student ({len(s)})")
        ax.set(xlim=(-0.02 * top, top), ylim=(0, top), xlabel="birth", ylabel="death", title=f"H{dim}")
        ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    return fig
