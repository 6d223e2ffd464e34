"""Low-rank approximation by SVD, shared by combine, extract and resize.

Best rank-k approximation in the Frobenius norm (Eckart–Young), split evenly between the factors
(``up = U·√S``, ``down = √S·Vᵀ``). Values are never clamped. Every result carries its relative Frobenius
error ``‖ΔW − ΔW_k‖ / ‖ΔW‖`` and kept energy ``Σ_{i<k} s_i² / Σ s_i²``, read off the singular values.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..core.errors import AdapterError


@dataclass
class Approx:
    up: torch.Tensor  # [out, k], float64
    down: torch.Tensor  # [k, in], float64
    rank_in: int  # rank before truncation (numerical rank of a dense input: its full size)
    sq_norm: float  # ‖ΔW‖²
    sq_error: float  # ‖ΔW − ΔW_k‖²

    @property
    def rank(self) -> int:
        return int(self.down.shape[0])

    @property
    def rel_error(self) -> float:
        return math.sqrt(self.sq_error / self.sq_norm) if self.sq_norm > 0 else 0.0

    @property
    def energy(self) -> float:
        return 1.0 - self.sq_error / self.sq_norm if self.sq_norm > 0 else 1.0


def check_rank(rank: int, max_rank: int, name: str) -> None:
    if rank > max_rank:
        raise AdapterError(f"rank {rank} is larger than layer {name} allows (at most {max_rank}: the "
                           "smaller of its output and input sizes); choose a rank ≤ that, or --energy")


def choose_rank(s: torch.Tensor, *, rank: int | None, energy: float | None, name: str,
                max_rank: int) -> int:
    """``rank`` (refused above what the layer allows), or the fewest values keeping ``energy`` of Σs²."""
    if rank is not None:
        check_rank(rank, max_rank, name)
        return min(rank, len(s))
    if energy is None or not 0.0 < energy <= 1.0:
        raise AdapterError(f"give a rank ≥ 1 or an energy fraction in (0, 1], not {energy}")
    sq = s.double() ** 2
    total = float(sq.sum())
    if total == 0.0:
        return 1
    if energy >= 1.0:  # all of it: the numerical rank
        tol = float(s.max()) * max(s.shape[0], 1) * torch.finfo(torch.float32).eps
        return max(1, int((s > tol).sum()))
    cumulative = torch.cumsum(sq, 0) / total
    return max(1, int(torch.searchsorted(cumulative, torch.tensor(energy, dtype=cumulative.dtype))) + 1)


def _truncate(u: torch.Tensor, s: torch.Tensor, vh: torch.Tensor, k: int, rank_in: int) -> Approx:
    root = s[:k].sqrt()
    sq = s.double() ** 2
    return Approx(u[:, :k] * root, root[:, None] * vh[:k], rank_in, float(sq.sum()), float(sq[k:].sum()))


def of_product(up: torch.Tensor, down: torch.Tensor, *, name: str, max_rank: int, rank: int | None = None,
               energy: float | None = None) -> Approx:
    """Truncated SVD of ``up @ down`` ([out, r] @ [r, in]) without forming it: QR of both factors first."""
    up, down = up.double(), down.double()
    q_up, r_up = torch.linalg.qr(up)
    q_down, r_down = torch.linalg.qr(down.T)
    u, s, vh = torch.linalg.svd(r_up @ r_down.T)
    k = choose_rank(s, rank=rank, energy=energy, name=name, max_rank=max_rank)
    return _truncate(q_up @ u, s, vh @ q_down.T, k, rank_in=int(down.shape[0]))


def of_dense(delta: torch.Tensor, *, name: str, rank: int | None = None, energy: float | None = None,
             device: str = "cpu") -> Approx:
    """Truncated SVD of a weight difference (any shape: flattened to [out, rest])."""
    matrix = delta.reshape(delta.shape[0], -1).to(device, torch.float32)
    u, s, vh = torch.linalg.svd(matrix, full_matrices=False)
    u, s, vh = u.double().cpu(), s.double().cpu(), vh.double().cpu()
    k = choose_rank(s, rank=rank, energy=energy, name=name, max_rank=min(matrix.shape))
    return _truncate(u, s, vh, k, rank_in=min(matrix.shape))


def overall(approxes) -> dict:
    """Relative error and kept energy over several layers together."""
    sq_norm = sum(a.sq_norm for a in approxes)
    sq_error = sum(a.sq_error for a in approxes)
    return {"rel_error": math.sqrt(sq_error / sq_norm) if sq_norm else 0.0,
            "energy": 1.0 - sq_error / sq_norm if sq_norm else 1.0}
