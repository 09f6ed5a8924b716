"""Heatmap -> voxel projection (VoxelPose's ProjectLayer), the hot path of root_net and pose_net.

Every voxel centre (mm, model frame) is projected into every view with the camera's distortion (the
same model as `geometry.cameras.project_points_torch`), mapped by the view's affine (original px ->
input px) and scaled to heatmap px (pixel centres at integers, ``F.grid_sample(align_corners=True)``'s
convention), then sampled bilinearly (zeros outside the heatmap).
A view counts for a voxel when the point is in front of the camera (depth >= 1 mm), within the
distortion model's range (undistorted r^2 = (x/z)^2 + (y/z)^2 <= 4, where `project_points_torch`
clamps; further out the polynomial can fold points back into the image) and inside the heatmap. The
volume is the mean over those views (0 when none), clamped to [0, 1].

Speed (CPU, `benchmarks/bench_projection.py`):

* The camera -> pixel chain K -> affine -> heatmap scale is linear, so it is folded into one 2x3 matrix per
  view (`pixel_transform`) and merged with the distortion terms (`sampling.pixel_coords`).
* Per-proposal cubes are regular grids: camera coordinates are the per-cube ``R @ root + t`` plus three
  per-axis terms, added by broadcasting (`ProjectionLayer.cubes`), never a (M, 3) point tensor.
* Uncached point sets (cubes, generic points) are sampled by `sampling.bag_volume`: per block of points,
  exact float64 pixel coordinates -> 4 bilinear taps per view with weight / number of valid views -> one
  ``F.embedding_bag`` over a channels-last heatmap table, which sums taps and views in one pass (~5x
  fewer cycles than ``F.grid_sample`` on NCHW maps plus a sum over views). Their volume is a (B, C, M) view
  of channels-last (B, M, C) memory, the layout embedding_bag writes; PoseNet's (B*K, J, X, Y, Z) view of
  it is ``torch.channels_last_3d``, which Conv3d takes without a copy.
* Sampling grids of a fixed voxel set (the root space) are cached, keyed by a hash of the camera and
  affine tensors' bytes, and sampled with ``F.grid_sample`` (block-wise without autograd, so the
  (B*V, C, M) samples are never materialised). Gradients flow to the heatmaps only.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterator, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from selfpose3d.models.sampling import (
    Coords,
    ViewConstants,
    bag_volume,
    pixel_coords,
    view_constants,
)

OUTSIDE = -3.0  # grid coordinate of an invalid sample: all bilinear taps fall outside -> exactly 0
CAMERA_KEYS = ("K", "R", "t", "dist", "affine")
CHUNK_POINTS = 32768  # points per block (B*V*CHUNK float64 per temporary: L3-sized)
SAMPLE_POINTS = 4096  # points per grid_sample call of the cached path without autograd


class ProjectionError(ValueError):
    """Projection inputs have the wrong shape / missing batch keys."""


def grid_axes(center_mm: Sequence[float], size_mm: Sequence[float], voxels: Sequence[int]) -> list[Tensor]:
    """Per-axis voxel centres (X,), (Y,), (Z,) float64 mm of an axis-aligned grid: like VoxelPose the
    first and last centres lie on the grid's faces (linspace(-size/2, size/2, n) + centre); an axis with
    one voxel sits at the centre."""
    axes = []
    for c, s, n in zip(center_mm, size_mm, voxels, strict=True):
        n = int(n)
        axis = torch.linspace(-s / 2, s / 2, n, dtype=torch.float64) if n > 1 else torch.zeros(1, dtype=torch.float64)
        axes.append(axis + c)
    return axes


def grid_points(center_mm: Sequence[float], size_mm: Sequence[float], voxels: Sequence[int],
                dtype: torch.dtype = torch.float32, device: torch.device | str | None = None) -> Tensor:
    """Voxel centres of an axis-aligned grid -> (X*Y*Z, 3) mm, x-major (index = (ix*Y + iy)*Z + iz).

    center_mm, size_mm: (3,) mm; voxels: (3,) counts; centres as in `grid_axes`.
    """
    mesh = torch.meshgrid(*grid_axes(center_mm, size_mm, voxels), indexing="ij")
    return torch.stack(mesh, dim=-1).reshape(-1, 3).to(dtype=dtype, device=device)


def cube_points(centers_mm: Tensor, offsets_mm: Tensor) -> Tensor:
    """Per-proposal cubes: centres (B, K, 3) mm + cube offsets (N, 3) mm -> (B, K*N, 3) mm."""
    pts = centers_mm[:, :, None, :].to(offsets_mm.dtype) + offsets_mm[None, None]
    return pts.reshape(centers_mm.shape[0], -1, 3)


def pixel_transform(K: Tensor, affine: Tensor, image_size: Sequence[int], heatmap_size: Sequence[int]) -> Tensor:
    """Fold K (B,V,3,3) px, affine (B,V,2,3) original px -> input px and the input -> heatmap scaling into one
    (B, V, 2, 3) float64 matrix applied to distorted normalised camera coordinates (xd, yd, 1), giving heatmap
    px with pixel centres at integers (``grid_sample(align_corners=True)``'s convention). image_size /
    heatmap_size: (width, height)."""
    K = K.double()
    affine = affine.double()
    scale = torch.tensor([heatmap_size[0] / image_size[0], heatmap_size[1] / image_size[1]],
                         dtype=torch.float64, device=K.device)
    return scale[:, None] * (affine @ K)


def _grid_block(x: Tensor, y: Tensor, z: Tensor, consts: ViewConstants, size: Sequence[int],
                grid: Tensor) -> Tensor:
    """Camera coordinates x, y, z (B, V, n) float64 mm (overwritten) -> ``grid_sample`` coordinates in [-1, 1]
    written into grid (B, V, n, 2); returns valid (B, V, n) bool (`sampling.pixel_coords`' mask, inside the
    heatmap). Invalid points get gx = OUTSIDE, so they sample exactly 0."""
    w, h = size
    u, v, mask = pixel_coords(x, y, z, consts)
    valid = (u >= 0) & (u <= w - 1) & (v >= 0) & (v <= h - 1)
    if mask is not None:
        valid &= mask
    grid[..., 0].copy_(torch.where(valid, u.mul_(2.0 / max(w - 1, 1)).sub_(1.0), OUTSIDE))
    grid[..., 1].copy_(v.mul_(2.0 / max(h - 1, 1)).sub_(1.0))
    return valid


def _point_coords(points: Tensor, R: Tensor, t: Tensor) -> Coords:
    """Camera coordinates of points (B, M, 3) mm (R (B,V,3,3), t (B,V,3) float64) for a point range,
    written into a (B, V, 3, n) float64 buffer."""
    def coords(s: int, e: int, out: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        X, Y, Z = points[:, s:e].to(R.dtype).transpose(1, 2).contiguous().unsqueeze(1).unbind(dim=2)  # (B, 1, n)
        for i in range(3):
            row = torch.mul(X, R[..., i, 0, None], out=out[:, :, i])
            row.addcmul_(Y, R[..., i, 1, None]).addcmul_(Z, R[..., i, 2, None]).add_(t[..., i, None])
        return out[:, :, 0], out[:, :, 1], out[:, :, 2]
    return coords


def _cube_coords(centers: Tensor, axes: Sequence[Tensor], R: Tensor, t: Tensor) -> Coords:
    """Camera coordinates of the cubes centres (B, K, 3) + grid of axes (X,), (Y,), (Z,) mm, ordered as
    `cube_points` (index k*N + (ix*Y + iy)*Z + iz), for a point range lying inside one cube and made of
    whole ix-slices, written into a (B, V, 3, n) float64 buffer: (R @ root + t) + R[:, 0] ox + R[:, 1] oy
    + R[:, 2] oz, summed by broadcasting."""
    base = torch.einsum("bvij,bkj->bkvi", R, centers.to(R.dtype)) + t[:, None]  # (B, K, V, 3)
    ox, oy, oz = (R[..., a, None] * ax.to(R)[None, None, None] for a, ax in enumerate(axes))  # (B, V, 3, n_a)
    n_yz = oy.shape[-1] * oz.shape[-1]
    n = ox.shape[-1] * n_yz

    def coords(s: int, e: int, out: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        k, i0, i1 = s // n, (s % n) // n_yz, (s % n) // n_yz + (e - s) // n_yz
        plane = (base[:, k, :, :, None, None] + ox[..., i0:i1, None]) + oy[..., None, :]  # (B, V, 3, ni, Y)
        torch.add(plane[..., None], oz[..., None, None, :], out=out.view(*plane.shape, oz.shape[-1]))
        return out[:, :, 0], out[:, :, 1], out[:, :, 2]
    return coords


def _block_size(chunk: int, step: int) -> int:
    """Points per block: a multiple of ``step`` (whole cube x-slices), about ``chunk``."""
    return max(step, chunk // step * step)


def _blocks(M: int, chunk: int, step: int, period: int) -> Iterator[tuple[int, int]]:
    """Point ranges [s, e) covering 0..M: at most `_block_size` points, a multiple of ``step``, never
    crossing a multiple of ``period`` (a cube's N points; ``period`` is a multiple of ``step``)."""
    size = _block_size(chunk, step)
    for start in range(0, M, period):
        stop = min(start + period, M)
        for s in range(start, stop, size):
            yield s, min(s + size, stop)


def _fill(coords: Coords, M: int, consts: ViewConstants, size: Sequence[int], grid_dtype: torch.dtype,
          chunk: int) -> tuple[Tensor, Tensor]:
    """Whole grid (B*V, 1, M, 2) and valid-view count (B, 1, M) from a camera-coordinate source."""
    B, V = consts.k1.shape[:2]
    grid = torch.empty(B, V, M, 2, dtype=grid_dtype, device=consts.k1.device)
    count = torch.empty(B, M, dtype=grid_dtype, device=consts.k1.device)
    for s, e in _blocks(M, chunk, 1, max(M, 1)):
        xyz = coords(s, e, torch.empty(B, V, 3, e - s, dtype=torch.float64, device=grid.device))
        valid = _grid_block(*xyz, consts, size, grid[:, :, s:e])
        torch.sum(valid, dim=1, out=count[:, s:e])
    return grid.view(B * V, 1, M, 2), count.unsqueeze(1)


def _mean_over_views(maps: Tensor, grid: Tensor, count: Tensor, out: Tensor, sample: int) -> None:
    """maps (B*V, C, h, w), grid (B, V, n, 2), count (B, n) -> out (B, C, n) = clamp(sum over views of the
    bilinear samples / max(count, 1), 0, 1), one grid_sample per ``sample`` points (stays in cache)."""
    B, V, n, _ = grid.shape
    C = maps.shape[1]
    for s in range(0, n, sample):
        e = min(s + sample, n)
        taps = F.grid_sample(maps, grid[:, :, s:e].reshape(B * V, 1, e - s, 2), mode="bilinear",
                             padding_mode="zeros", align_corners=True)
        dest = out[:, :, s:e]
        torch.sum(taps.view(B, V, C, e - s), dim=1, out=dest)
        dest.div_(count[:, None, s:e].clamp(min=1.0)).clamp_(0.0, 1.0)


def _camera_setup(cameras: Mapping[str, Tensor], image_size: Sequence[int], heatmap_size: Sequence[int],
                  device: torch.device) -> tuple[dict[str, Tensor], ViewConstants]:
    """float64 copies of the camera tensors and the per-view constants of `sampling.pixel_coords`."""
    cam = {k: cameras[k].to(device=device, dtype=torch.float64) for k in CAMERA_KEYS}
    return cam, view_constants(cam["dist"], pixel_transform(cam["K"], cam["affine"], image_size, heatmap_size))


def sampling_grid(points: Tensor, cameras: Mapping[str, Tensor], image_size: Sequence[int],
                  heatmap_size: Sequence[int], grid_dtype: torch.dtype = torch.float32,
                  chunk: int = CHUNK_POINTS) -> tuple[Tensor, Tensor]:
    """Project voxel centres into every view (vectorised over samples and views, no autograd).

    points: (B, M, 3) mm (any float dtype); cameras: K, R (B,V,3,3), t (B,V,3), dist (B,V,5), affine
    (B,V,2,3); image_size, heatmap_size: (width, height) px. Returns grid (B*V, 1, M, 2) of grid_dtype
    in grid_sample coordinates (invalid samples moved to OUTSIDE, so they sample exactly 0) and count
    (B, 1, M) = number of views in which each point is valid.

    The arithmetic runs in float64 (in float32, R X + t loses ~1e-3 mm to cancellation and validity
    at the image border flips for ~1 in 1e7 samples); points are processed in blocks of ``chunk`` so
    the temporaries stay cache-sized (results do not depend on it).
    """
    with torch.no_grad():
        cam, consts = _camera_setup(cameras, image_size, heatmap_size, points.device)
        return _fill(_point_coords(points, cam["R"], cam["t"]), points.shape[1], consts, heatmap_size,
                     grid_dtype, chunk)


def camera_key(cameras: Mapping[str, Tensor]) -> str:
    """Hash (blake2b hex) of the camera/affine tensors' shapes, dtypes and bytes, for the grid cache."""
    h = hashlib.blake2b(digest_size=16)
    for k in CAMERA_KEYS:
        tensor = cameras[k].detach().to("cpu").contiguous()
        h.update(f"{k}{tuple(tensor.shape)}{tensor.dtype}".encode())
        h.update(tensor.numpy().tobytes())
    return h.hexdigest()


def _check_inputs(heatmaps: Tensor, cameras: Mapping[str, Tensor], heatmap_size: Sequence[int]) -> None:
    """Raise `ProjectionError` unless heatmaps are (B,V,C,h,w) of heatmap_size and cameras are (B,V,...)."""
    if heatmaps.dim() != 5:
        raise ProjectionError(f"heatmaps: expected (B, V, C, h, w), got shape {tuple(heatmaps.shape)}")
    if tuple(heatmaps.shape[-2:]) != (heatmap_size[1], heatmap_size[0]):
        raise ProjectionError(f"heatmaps: expected h x w = {heatmap_size[1]} x {heatmap_size[0]} "
                              f"(dataset.heatmap_size), got {tuple(heatmaps.shape[-2:])}")
    for key in CAMERA_KEYS:
        if key not in cameras:
            raise ProjectionError(f"batch: missing key {key!r} (expected {', '.join(CAMERA_KEYS)})")
        if tuple(cameras[key].shape[:2]) != tuple(heatmaps.shape[:2]):
            raise ProjectionError(f"batch[{key!r}]: expected leading (B, V) = {tuple(heatmaps.shape[:2])}, "
                                  f"got {tuple(cameras[key].shape)}")


def _grid_dtype(heatmaps: Tensor) -> torch.dtype:
    return torch.float64 if heatmaps.dtype == torch.float64 else torch.float32


class ProjectionLayer(nn.Module):
    """View-averaged heatmap sampling at voxel centres, with an LRU cache of fixed-grid sampling grids.

    image_size, heatmap_size: (width, height) px of the network input and of the heatmaps.
    cache_size: number of (cameras, grid) entries kept; 0 disables caching.
    """

    def __init__(self, image_size: Sequence[int], heatmap_size: Sequence[int], cache_size: int = 8) -> None:
        super().__init__()
        self.image_size = (int(image_size[0]), int(image_size[1]))
        self.heatmap_size = (int(heatmap_size[0]), int(heatmap_size[1]))
        self.cache_size = cache_size
        self._cache: OrderedDict[tuple, tuple[Tensor, Tensor]] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def clear_cache(self) -> None:
        """Drop every cached sampling grid and reset the hit/miss counters."""
        self._cache.clear()
        self.hits = self.misses = 0

    def grids(self, cameras: Mapping[str, Tensor], points: Tensor, cache_key: Hashable | None = None,
              grid_dtype: torch.dtype = torch.float32) -> tuple[Tensor, Tensor]:
        """Sampling grid (B*V, 1, M, 2) and valid-view count (B, 1, M) for points (B, M, 3) mm.

        With ``cache_key`` (the caller promises: same key -> same points) the result is cached under
        (cache_key, hash of the camera/affine bytes, shapes, device, dtype); a changed camera misses.
        """
        if cache_key is None or self.cache_size <= 0:
            return sampling_grid(points, cameras, self.image_size, self.heatmap_size, grid_dtype)
        key = (cache_key, camera_key(cameras), tuple(points.shape), str(points.device), grid_dtype)
        hit = self._cache.get(key)
        if hit is not None:
            self.hits += 1
            self._cache.move_to_end(key)
            return hit
        self.misses += 1
        value = sampling_grid(points, cameras, self.image_size, self.heatmap_size, grid_dtype)
        self._cache[key] = value
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        return value

    def _sample(self, heatmaps: Tensor, grid: Tensor, count: Tensor) -> Tensor:
        """heatmaps (B, V, C, h, w), grid (B*V, 1, M, 2), count (B, 1, M) -> view mean (B, C, M) in [0, 1]."""
        B, V, C, h, w = heatmaps.shape
        M = grid.shape[2]
        maps = heatmaps.reshape(B * V, C, h, w)
        grid = grid.to(heatmaps.dtype)
        if torch.is_grad_enabled() and heatmaps.requires_grad:
            sampled = F.grid_sample(maps, grid, mode="bilinear", padding_mode="zeros", align_corners=True)
            volume = sampled.view(B, V, C, M).sum(dim=1)
            return volume.div_(count.clamp(min=1.0).to(heatmaps.dtype)).clamp_(0.0, 1.0)
        out = heatmaps.new_empty(B, C, M)
        _mean_over_views(maps, grid.view(B, V, M, 2), count.view(B, M).to(heatmaps.dtype), out, SAMPLE_POINTS)
        return out

    def _bags(self, heatmaps: Tensor, cameras: Mapping[str, Tensor], coords_of: Callable[[dict], Coords],
              M: int, step: int = 1, period: int | None = None) -> Tensor:
        """Sampling + view mean (B, C, M) by `sampling.bag_volume` from a camera-coordinate source
        ``coords_of(float64 cameras)`` whose point ranges must be multiples of ``step`` inside one ``period``."""
        with torch.no_grad():
            cam, consts = _camera_setup(cameras, self.image_size, self.heatmap_size, heatmaps.device)
            coords = coords_of(cam)
        blocks = _blocks(M, CHUNK_POINTS, step, period or max(M, 1))
        return bag_volume(heatmaps, coords, blocks, M, _block_size(CHUNK_POINTS, step), consts)

    def forward(self, heatmaps: Tensor, cameras: Mapping[str, Tensor], points: Tensor,
                cache_key: Hashable | None = None) -> Tensor:
        """heatmaps (B, V, C, h, w), cameras (batch keys K, R, t, dist, affine; (B, V, ...)),
        points (B, M, 3) or (M, 3) mm (float64 points keep sub-micrometre precision far from the
        origin) -> volume (B, C, M) in [0, 1]: the mean over the views in which
        the point is valid (0 if none). Without ``cache_key`` the volume is a view of (B, M, C) memory."""
        _check_inputs(heatmaps, cameras, self.heatmap_size)
        B = heatmaps.shape[0]
        if points.dim() == 2:
            points = points.unsqueeze(0).expand(B, -1, -1)
        points = points.to(heatmaps.device)
        if cache_key is not None and self.cache_size > 0:
            grid, count = self.grids(cameras, points, cache_key, _grid_dtype(heatmaps))
            return self._sample(heatmaps, grid, count)
        return self._bags(heatmaps, cameras, lambda cam: _point_coords(points, cam["R"], cam["t"]),
                          points.shape[1])

    def cubes(self, heatmaps: Tensor, cameras: Mapping[str, Tensor], centers_mm: Tensor,
              size_mm: Sequence[float], voxels: Sequence[int]) -> Tensor:
        """Volumes of K cubes per sample: heatmaps (B, V, C, h, w), cameras as in `forward`, cube centres
        (B, K, 3) mm (no gradient), cube size (3,) mm and voxel counts (3,) -> (B, C, K*N), N = X*Y*Z,
        equal to ``forward(heatmaps, cameras, cube_points(centers, grid_points(0, size_mm, voxels)))``
        (up to float64 rounding, also a view of (B, K*N, C) memory) but without building the points:
        x_cam = (R root + t) + per-axis terms."""
        _check_inputs(heatmaps, cameras, self.heatmap_size)
        axes = grid_axes((0.0, 0.0, 0.0), size_mm, voxels)
        centers = centers_mm.detach().to(device=heatmaps.device, dtype=torch.float64)
        step = len(axes[1]) * len(axes[2])
        n = step * len(axes[0])
        return self._bags(heatmaps, cameras, lambda cam: _cube_coords(centers, axes, cam["R"], cam["t"]),
                          centers.shape[1] * n, step, n)
