"""Camera -> heatmap-pixel projection and view-averaged bilinear sampling as one `F.embedding_bag` per block.

Used by `projection.ProjectionLayer` for point sets that are not cached (pose cubes, generic points).

* `pixel_coords`: camera coordinates (mm) -> heatmap pixel coordinates, the distortion model of
  `geometry.cameras.project_points_torch` with K, the view's affine and the input -> heatmap scaling folded
  into one 2x3 matrix per view (`projection.pixel_transform`). Runs in float64 on "planar" (B, V, n)
  tensors: one view per row, so every op is a contiguous loop with at most one per-view (B, V, 1) operand.
* `bag_volume`: the heatmaps become a channels-last table (B, V*h*w + w + 1, C) (the w + 1 zero rows keep
  the +1 taps of a point on the last column / row in range; those taps have weight 0). Each point is one bag
  of 4*V (row, weight) pairs, the 4 bilinear taps in every view with weight = bilinear weight * valid /
  number of valid views, so ``F.embedding_bag(mode="sum")`` returns the view mean directly. Bilinear weights
  come from exact float64 pixel coordinates (``F.grid_sample`` rounds them to float32 first; the two differ
  by ~1e-6 on smooth heatmaps).
* The bag layout (B, n, 2, V, 2) is written from the planar tensors by two transposing copies per buffer:
  the row pair (i, i + 1) of a tap row is packed into one int64 (i * PACK + PAIR_OFFSET), and the weight
  pair of a tap row into one complex number.
* With autograd the taps of all blocks are kept and `_BagSum` samples them in one call; its backward
  scatters the weighted output gradient into the table with ``index_put_(accumulate=True)`` (embedding_bag's
  own backward with per-sample weights sorts all indices and is ~40x slower; ``index_add_`` ~2-4x).
  Gradients flow to the heatmaps only.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

MIN_DEPTH_MM = 1.0  # same clamp as geometry.cameras.project_points_torch
MAX_R2 = 4.0  # same clamp as geometry.cameras.project_points_torch
PACK = 2**32 + 1  # the int64 i * PACK + PAIR_OFFSET holds the int32 pair (i, i + 1) in memory order
PAIR_OFFSET = 2**32 if sys.byteorder == "little" else 1
EXACT_ROWS = 2**21 - 2  # packing in float64 is exact while table rows + w stay below this
BACKWARD_BAGS = 4096  # bags per index_put_ in `_BagSum.backward` (bounds its temporary)

# (start, end, out buffer (B, V, 3, n) float64) -> camera x, y, z (B, V, n) mm, views of the buffer
Coords = Callable[[int, int, Tensor], tuple[Tensor, Tensor, Tensor]]


class ViewConstants(NamedTuple):
    """Per-view (B, V, 1) float64 factors of `pixel_coords`; ``cross`` is False when every view's 2x2
    pixel transform is diagonal (no affine rotation, no skew), which skips two products per coordinate."""

    k1: Tensor
    k2: Tensor
    k3: Tensor
    tp1: Tensor
    tp2: Tensor
    t00: Tensor
    t01: Tensor
    t02: Tensor
    t10: Tensor
    t11: Tensor
    t12: Tensor
    cu: Tensor
    cv: Tensor
    cross: bool


def view_constants(dist: Tensor, T: Tensor) -> ViewConstants:
    """dist (B, V, 5) [k1, k2, p1, p2, k3], T (B, V, 2, 3) float64 (distorted normalised camera
    coordinates (xd, yd, 1) -> heatmap px) -> `ViewConstants`."""
    k1, k2, p1, p2, k3 = (dist[..., i, None] for i in range(5))
    t00, t01, t02, t10, t11, t12 = (T[..., i, j, None] for i in range(2) for j in range(3))
    cross = bool((t01 != 0).any() or (t10 != 0).any())
    return ViewConstants(k1, k2, k3, 2 * p1, 2 * p2, t00, t01, t02, t10, t11, t12,
                         t00 * p2 + t01 * p1, t10 * p2 + t11 * p1, cross)


def pixel_coords(x: Tensor, y: Tensor, z: Tensor, c: ViewConstants) -> tuple[Tensor, Tensor, Tensor | None]:
    """Camera coordinates x, y, z (B, V, n) float64 mm (overwritten; v is returned in y's storage) -> heatmap
    px u, v (B, V, n) float64 and a bool mask of depth >= MIN_DEPTH_MM and undistorted r^2 <= MAX_R2 (None
    when every point passes).

    Same model as `project_points_torch` then T, rearranged: with normalised x, y, r2 = x^2 + y^2 and
    d = k1 r2 + k2 r2^2 + k3 r2^3 + 2 p1 y + 2 p2 x, xd = x (1 + d) + p2 r2 and yd = y (1 + d) + p1 r2, so
    u = l (1 + d) + (t00 p2 + t01 p1) r2 + t02 with l = t00 x + t01 y (v alike). Masked points get finite
    coordinates (the depth is clamped first, non-finite values are zeroed), so callers only need to mask them.
    """
    mask = None
    if not float(z.amin()) >= MIN_DEPTH_MM:  # (a nan also takes this path)
        mask = z >= MIN_DEPTH_MM
        z.clamp_(min=MIN_DEPTH_MM)
    inv = z.reciprocal_()
    x, y = x.mul_(inv), y.mul_(inv)
    r2 = torch.mul(x, x, out=inv).addcmul_(y, y)
    if not float(r2.amax()) <= MAX_R2:
        mask = r2 <= MAX_R2 if mask is None else mask.logical_and_(r2 <= MAX_R2)
    d = torch.mul(r2, c.k3).add_(c.k2).mul_(r2).add_(c.k1).mul_(r2)
    d.addcmul_(x, c.tp2).addcmul_(y, c.tp1)
    u = torch.mul(x, c.t00)
    if c.cross:
        u.addcmul_(y, c.t01)
    u.addcmul_(u, d).addcmul_(r2, c.cu).add_(c.t02)
    v = y.mul_(c.t11)
    if c.cross:
        v.addcmul_(x, c.t10)
    v.addcmul_(v, d).addcmul_(r2, c.cv).add_(c.t12)
    if mask is not None:  # masked points may be non-finite (nan / inf input): keep them finite
        u.nan_to_num_(0.0, 0.0, 0.0)
        v.nan_to_num_(0.0, 0.0, 0.0)
    return u, v, mask


def heatmap_table(heatmaps: Tensor) -> Tensor:
    """heatmaps (B, V, C, h, w) -> channels-last table (B, V*h*w + w + 1, C), row (v*h + y)*w + x, with w + 1
    trailing zero rows (differentiable)."""
    B, V, C, h, w = heatmaps.shape
    return F.pad(heatmaps.permute(0, 1, 3, 4, 2).reshape(B, V * h * w, C), (0, 0, 0, w + 1))


def _copy_transposed(dst: Tensor, src: Tensor) -> None:
    """dst (B, n, V) <- src (B, V, n); 8-byte complex values are moved as int64 (a faster copy loop)."""
    if src.dtype == torch.complex64:
        dst, src = dst.view(torch.int64), src.view(torch.int64)
    dst.copy_(src.transpose(1, 2))


def _write_index_pairs(idx: Tensor, x0: Tensor, y0: Tensor, w: int, row0: Tensor, exact: bool) -> None:
    """Tap rows into idx (B, n, 2, V) int64: slot [.., j, v] packs rows (r, r + 1), r = (y0 + j)*w + x0 +
    row0 in view v. x0, y0 (B, V, n) float64 integers (y0 overwritten), row0 (B, V, 1) float64; ``exact``:
    every packed value stays below 2**53, so the packing can run in float64."""
    if exact:
        pair = y0.mul_(w * PACK).add_(row0 * PACK + PAIR_OFFSET).add_(x0, alpha=PACK)
    else:
        pair = y0.mul_(w).add_(row0).add_(x0).to(torch.int64).mul_(PACK).add_(PAIR_OFFSET)
    idx[:, :, 0].copy_(pair.transpose(1, 2))
    idx[:, :, 1].copy_(pair.add_(w * PACK).transpose(1, 2))


def write_taps(u: Tensor, v: Tensor, mask: Tensor | None, size: tuple[int, int], row0: Tensor, idx: Tensor,
               weights: Tensor, exact: bool = True) -> None:
    """Bilinear taps of heatmap px u, v (B, V, n) float64 (+ optional bool mask) into the bag buffers
    idx (B, n, 2, V) int64 (packed row pairs) and weights (B, n, 2, V) complex (weight pairs), for a table
    whose view v starts at row0[:, v] (B, V, 1). size = (w, h). A point is valid in a view when mask holds
    and 0 <= u <= w - 1, 0 <= v <= h - 1; its weights are bilinear weight / number of valid views (0 if
    invalid). u, v are overwritten; ``exact``: see `_write_index_pairs`."""
    w, h = size
    dtype = weights.real.dtype
    uc, vc = u.clamp(0, w - 1), v.clamp(0, h - 1)
    scale = torch.eq(uc, u, out=torch.empty(u.shape, dtype=dtype, device=u.device))
    scale.mul_(torch.eq(vc, v, out=torch.empty(u.shape, dtype=dtype, device=u.device)))
    if mask is not None:
        scale.mul_(mask)
    scale.mul_(scale.sum(dim=1, keepdim=True).clamp_(min=1.0).reciprocal_())
    x0, y0 = torch.floor(uc, out=u), torch.floor(vc, out=v)
    fx = uc.sub_(x0).to(dtype)  # float64 differences, then one cast each; fy complex for the product below
    fy = vc.sub_(y0).to(weights.dtype)
    _write_index_pairs(idx, x0, y0, w, row0, exact)
    a = fx.mul_(scale)
    top = torch.complex(scale.sub_(a), a)  # ((1 - fx) s, fx s): the taps (x0, x0 + 1) of row y0
    bottom = top * fy
    _copy_transposed(weights[:, :, 1], bottom)
    _copy_transposed(weights[:, :, 0], top.sub_(bottom))


def _embedding_bag(table: Tensor, idx: Tensor, weights: Tensor, offsets: Tensor) -> Tensor:
    """Bag sums (n, C) of table rows for the bag buffers idx (n, 2, V) int64 (packed int32 pairs) and weights
    (n, 2, V, 2): bag i = entries [i*4V, (i+1)*4V) of the flat buffers, ``offsets`` = their starts (>= n)."""
    return F.embedding_bag(idx.view(torch.int32).view(-1), table, offsets[: idx.shape[0]], mode="sum",
                           per_sample_weights=weights.view(-1))


class _BagSum(torch.autograd.Function):
    """table (B, R, C), idx (B, M, E) int32 rows, weights (B, M, E) -> (B, M, C) weighted row sums."""

    @staticmethod
    def forward(ctx, table: Tensor, idx: Tensor, weights: Tensor) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(idx, weights)
        ctx.rows = table.shape[1]
        return torch.stack([F.embedding_bag(idx[b], table[b], mode="sum", per_sample_weights=weights[b])
                            for b in range(table.shape[0])])

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None, None]:  # type: ignore[override]
        idx, weights = ctx.saved_tensors
        B, M = idx.shape[:2]
        out = grad.new_zeros(B, ctx.rows, grad.shape[-1])
        for b in range(B):
            for s in range(0, M, BACKWARD_BAGS):
                g = grad[b, s : s + BACKWARD_BAGS]
                rows = weights[b, s : s + BACKWARD_BAGS, :, None] * g[:, None, :]
                rows_idx = idx[b, s : s + BACKWARD_BAGS].reshape(-1).long()
                out[b].index_put_((rows_idx,), rows.reshape(-1, g.shape[-1]), accumulate=True)
        return out, None, None


def bag_volume(heatmaps: Tensor, coords: Coords, blocks: Iterable[tuple[int, int]], M: int, block_size: int,
               consts: ViewConstants) -> Tensor:
    """View-averaged bilinear samples (B, C, M) in [0, 1] of heatmaps (B, V, C, h, w) at M points whose camera
    coordinates ``coords(s, e)`` gives per block (the point ranges ``blocks``, at most ``block_size`` points
    each, cover 0..M). Without autograd, sampled and written block by block.

    The volume is returned as a (B, C, M) view of channels-last (B, M, C) memory, the layout embedding_bag
    produces: a (B, C, X, Y, Z) view of it is ``torch.channels_last_3d``, which Conv3d takes as is."""
    if heatmaps.dtype not in (torch.float32, torch.float64):
        return bag_volume(heatmaps.float(), coords, blocks, M, block_size, consts).to(heatmaps.dtype)
    B, V, C, h, w = heatmaps.shape
    table = heatmap_table(heatmaps)
    row0 = torch.arange(V, dtype=torch.float64, device=heatmaps.device).mul_(h * w).expand(B, V)[..., None]
    exact = table.shape[1] + w < EXACT_ROWS
    needs_grad = torch.is_grad_enabled() and heatmaps.requires_grad
    n_buf = M if needs_grad else min(block_size, M)
    idx = torch.empty(B, n_buf, 2, V, dtype=torch.int64, device=heatmaps.device)
    weights = torch.empty(B, n_buf, 2, V, 2, dtype=heatmaps.dtype, device=heatmaps.device)
    cweights = torch.view_as_complex(weights)
    out = None if needs_grad else heatmaps.new_empty(B, M, C)
    offsets = torch.arange(0, n_buf * 4 * V, 4 * V, dtype=torch.int32, device=heatmaps.device)  # bag starts
    with torch.no_grad():
        for s, e in blocks:
            u, v, mask = pixel_coords(*coords(s, e, heatmaps.new_empty(B, V, 3, e - s, dtype=torch.float64)),
                                      consts)
            part = slice(s, e) if needs_grad else slice(0, e - s)
            write_taps(u, v, mask, (w, h), row0, idx[:, part], cweights[:, part], exact)
            if out is not None:
                for b in range(B):
                    bag = _embedding_bag(table[b], idx[b, : e - s], weights[b, : e - s], offsets)
                    torch.clamp(bag, 0.0, 1.0, out=out[b, s:e])
    if out is None:
        out = _BagSum.apply(table, idx.view(torch.int32).view(B, M, 4 * V), weights.view(B, M, 4 * V))
        out = out.clamp(0.0, 1.0)
    return out.transpose(1, 2)
