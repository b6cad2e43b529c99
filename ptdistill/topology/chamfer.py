"""Persistence-weighted Chamfer distance between two persistence diagrams (Eq. 2-3, Alg. 2).

Recall (teacher -> student) weights each teacher pair p by w(p) = log(1 + max(pers(p), 0)), normalised by
sum(w) + eps, so near-diagonal noise hardly counts (Lemma 1). Precision (student -> teacher) averages over
the student pairs. Each pair pays its matching cost C_ij = ||p_i - q_j||^2 / 2 (Alg. 2 keeps the 1/2) or,
if cheaper, its squared distance to the diagonal (d - b)^2 / 2. An empty side matches only the diagonal;
an empty teacher gives no recall term and an empty student no precision term.

Autograd gives Alg. 4's closed form: at a unique nearest neighbour the cost's gradient is (q - p), i.e.
Alg. 4's 2 (q - p) times Alg. 2's 1/2; ties in a min share the gradient uniformly.
"""

import torch


def _diagonal_cost(diagram: torch.Tensor) -> torch.Tensor:
    """Squared distance (K,) of each (birth, death) pair to the diagonal, (d - b)^2 / 2."""
    return (diagram[:, 1] - diagram[:, 0]).square() / 2


def _nearest_cost(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """For each pair of a (A, 2): min(min_j C(a_i, b_j), its diagonal cost), C = ||a_i - b_j||^2 / 2.

    The (A, B) search runs without grad; only the minimisers enter autograd, so the backward is O(A + B)
    rather than O(A B). Tied minimisers share the gradient uniformly.
    """
    diagonal = _diagonal_cost(a)  # (A,)
    with torch.no_grad():
        cost = torch.cat([(a[:, None] - b[None]).square().sum(-1) / 2, diagonal[:, None]], 1)  # (A, B + 1)
        row, col = (cost == cost.amin(1, keepdim=True)).nonzero().unbind(1)  # column B: the diagonal
    match = col < len(b)
    rows = torch.cat([row[match], row[~match]])
    costs = torch.cat([(a[row[match]] - b[col[match]]).square().sum(-1) / 2, diagonal[row[~match]]])
    ties = torch.bincount(rows, minlength=len(a))[rows]
    return a.new_zeros(len(a)).index_add(0, rows, costs / ties)


def pwcd(teacher: torch.Tensor, student: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Persistence-weighted Chamfer distance (scalar) between diagrams teacher (M, 2) and student (K, 2)."""
    for name, diagram in (("teacher", teacher), ("student", student)):
        if diagram.dim() != 2 or diagram.shape[1] != 2:
            raise ValueError(f"pwcd: {name} must be a (K, 2) diagram of (birth, death), got {tuple(diagram.shape)}")
        if not torch.isfinite(diagram).all():
            raise ValueError(f"pwcd: {name} diagram has NaN or Inf entries (drop essential pairs first)")
    teacher = teacher.to(student.dtype)
    weight = torch.log1p((teacher[:, 1] - teacher[:, 0]).clamp(min=0))  # (M,)
    recall = (weight * _nearest_cost(teacher, student)).sum() / (weight.sum() + eps)  # Eq. 2
    precision = _nearest_cost(student, teacher).sum() / max(len(student), 1)  # Eq. 3
    return recall + precision


def chamfer(teacher: torch.Tensor, student: torch.Tensor) -> torch.Tensor:
    """Plain Chamfer distance between diagrams teacher (M, 2) and student (K, 2), as the authors' code uses:
    mean_i min_j ||t_i - s_j||^2 + mean_j min_i ||s_j - t_i||^2, unweighted, with no diagonal.

    An empty side has nothing to match: the other side then pays its squared distance to the diagonal
    (2 × `_diagonal_cost`), so the loss stays defined and still pushes spurious pairs to the diagonal.
    """
    teacher = teacher.to(student.dtype)
    if len(teacher) == 0 or len(student) == 0:
        return sum((2 * _diagonal_cost(d)).mean() for d in (teacher, student) if len(d)) + student.sum() * 0.0
    cost = (teacher[:, None] - student[None]).square().sum(-1)  # (M, K)
    return cost.amin(1).mean() + cost.amin(0).mean()
