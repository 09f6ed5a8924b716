"""Heatmap -> voxel projection (VoxelPose's ProjectLayer), the hot path of root_net and pose_net.

Every voxel centre (mm, model frame) is projected into every view with the camera's distortion (the
same model as `geometry.cameras.project_points_torch`), mapped by the view's affine (original px ->
input px), scaled to heatmap px and normalised to [-1, 1] for ``F.grid_sample(align_corners=True)``.
A view counts for a voxel when the point is in front of the camera (depth >= 1 mm), within the
distortion model's range (undistorted r^2 = (x/z)^2 + (y/z)^2 <= 4, where `project_points_torch`
clamps; further out the polynomial can fold points back into the image) and inside the heatmap. The
volume is the mean over those views (0 when none), clamped to [0, 1]. One ``grid_sample`` call samples
all samples x views x channels x points.

The camera -> grid-coordinate chain K -> affine -> heatmap scale -> [-1, 1] is linear, so it is folded
into one 2x3 matrix per view (computed in float64) and applied to the distorted normalised coordinates.
Sampling grids of a fixed voxel set (the root space) are cached, keyed by a hash of the camera and
affine tensors' bytes; per-proposal cubes move and are computed batched over all cubes at once.
Gradients flow to the heatmaps only (grids are built without autograd).
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Hashable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

MIN_DEPTH_MM = 1.0  # same clamp as geometry.cameras.project_points_torch
MAX_R2 = 4.0  # same clamp as geometry.cameras.project_points_torch
OUTSIDE = -3.0  # grid coordinate of an invalid sample: all bilinear taps fall outside -> exactly 0
CAMERA_KEYS = ("K", "R", "t", "dist", "affine")
CHUNK_POINTS = 32768  # points per block in `sampling_grid` (B*V*CHUNK floats per temporary)


class ProjectionError(ValueError):
    """Projection inputs have the wrong shape / missing batch keys."""


def grid_points(center_mm: Sequence[float], size_mm: Sequence[float], voxels: Sequence[int],
                dtype: torch.dtype = torch.float32, device: torch.device | str | None = None) -> Tensor:
    """Voxel centres of an axis-aligned grid -> (X*Y*Z, 3) mm, x-major (index = (ix*Y + iy)*Z + iz).

    center_mm, size_mm: (3,) mm; voxels: (3,) counts. Like VoxelPose, the first and last centres lie
    on the grid's faces (linspace(-size/2, size/2, n)); an axis with one voxel sits at the centre.
    """
    axes = []
    for c, s, n in zip(center_mm, size_mm, voxels, strict=True):
        n = int(n)
        axis = torch.linspace(-s / 2, s / 2, n, dtype=torch.float64) if n > 1 else torch.zeros(1, dtype=torch.float64)
        axes.append(axis + c)
    mesh = torch.meshgrid(*axes, indexing="ij")
    return torch.stack(mesh, dim=-1).reshape(-1, 3).to(dtype=dtype, device=device)


def cube_points(centers_mm: Tensor, offsets_mm: Tensor) -> Tensor:
    """Per-proposal cubes: centres (B, K, 3) mm + cube offsets (N, 3) mm -> (B, K*N, 3) mm."""
    pts = centers_mm[:, :, None, :].to(offsets_mm.dtype) + offsets_mm[None, None]
    return pts.reshape(centers_mm.shape[0], -1, 3)


def grid_transform(K: Tensor, affine: Tensor, image_size: Sequence[int],
                   heatmap_size: Sequence[int]) -> Tensor:
    """Fold K (B,V,3,3) px, affine (B,V,2,3) original px -> input px, input->heatmap scaling and the
    [-1, 1] normalisation (align_corners=True) into one (B, V, 2, 3) float64 matrix applied to
    distorted normalised camera coordinates (xd, yd, 1). image_size / heatmap_size: (width, height)."""
    K = K.double()
    affine = affine.double()
    hw, hh = heatmap_size
    sx = heatmap_size[0] / image_size[0] * 2.0 / max(hw - 1, 1)
    sy = heatmap_size[1] / image_size[1] * 2.0 / max(hh - 1, 1)
    norm = torch.tensor([[sx, 0.0, -1.0], [0.0, sy, -1.0], [0.0, 0.0, 1.0]], dtype=torch.float64,
                        device=K.device)
    bottom = torch.zeros(*affine.shape[:-2], 1, 3, dtype=torch.float64, device=K.device)
    bottom[..., 0, 2] = 1.0
    affine3 = torch.cat([affine, bottom], dim=-2)
    return (norm @ affine3 @ K)[..., :2, :]


def _world_to_camera(points: Tensor, R: Tensor, t: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Points (B, m, 3) mm -> camera coordinates x, y, z, each (B, V, m) mm (R (B,V,3,3), t (B,V,3))."""
    X, Y, Z = points.transpose(1, 2).unsqueeze(1).unbind(dim=2)  # (B, 1, m) each

    def row(i: int) -> Tensor:
        out = torch.addcmul(t[..., i, None], R[..., i, 0, None], X)
        return out.addcmul_(R[..., i, 1, None], Y).addcmul_(R[..., i, 2, None], Z)

    return row(0), row(1), row(2)


def _distorted_coords(points: Tensor, R: Tensor, t: Tensor, dist: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """World points (B, m, 3) mm -> distorted normalised coords xd, yd (B, V, m) and the valid mask
    (depth >= 1 mm and undistorted r^2 <= 4). Same arithmetic as `project_points_torch` before K."""
    x, y, z = _world_to_camera(points.to(R.dtype), R, t)
    valid = z >= MIN_DEPTH_MM
    inv = z.clamp_(min=MIN_DEPTH_MM).reciprocal_()
    x.mul_(inv)
    y.mul_(inv)
    k1, k2, p1, p2, k3 = (dist[..., i, None] for i in range(5))
    xx, yy, xy = x * x, y * y, x * y
    r2 = xx + yy
    valid &= r2 <= MAX_R2  # beyond ~63 deg off-axis the distortion polynomial can fold back into the image
    r2.clamp_(max=MAX_R2)
    radial = (k3 * r2).add_(k2).mul_(r2).add_(k1).mul_(r2).add_(1.0)  # 1 + k1 r2 + k2 r2^2 + k3 r2^3
    xy.mul_(2.0)
    xd = (x * radial).addcmul_(p1, xy).addcmul_(p2, xx.mul_(2.0).add_(r2))
    yd = (y * radial).addcmul_(p2, xy).addcmul_(p1, yy.mul_(2.0).add_(r2))
    return xd, yd, valid


def _fill_grid(points: Tensor, cam: Mapping[str, Tensor], T: Tensor, grid: Tensor, valid: Tensor) -> None:
    """Write grid coordinates (B, V, m, 2) and validity (B, V, m) of points (B, m, 3) mm in place."""
    xd, yd, ok = _distorted_coords(points, cam["R"], cam["t"], cam["dist"])
    gx = (xd * T[..., 0, 0, None]).addcmul_(yd, T[..., 0, 1, None]).add_(T[..., 0, 2, None])
    gy = yd.mul_(T[..., 1, 1, None]).addcmul_(xd, T[..., 1, 0, None]).add_(T[..., 1, 2, None])
    ok &= gx >= -1.0
    ok &= gx <= 1.0
    ok &= gy >= -1.0
    ok &= gy <= 1.0
    valid.copy_(ok)
    grid[..., 0].copy_(gx.masked_fill_(~ok, OUTSIDE))
    grid[..., 1].copy_(gy)


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
    the temporaries stay cache-sized (~2x faster at paper shapes; results do not depend on it).
    """
    B, M, _ = points.shape
    V = cameras["R"].shape[1]
    dtype, device = grid_dtype, points.device
    with torch.no_grad():
        cam = {k: cameras[k].to(device=device, dtype=torch.float64) for k in CAMERA_KEYS}
        T = grid_transform(cam["K"], cam["affine"], image_size, heatmap_size)
        grid = torch.empty(B, V, M, 2, dtype=dtype, device=device)
        valid = torch.empty(B, V, M, dtype=torch.bool, device=device)
        for s in range(0, M, chunk):
            e = min(s + chunk, M)
            _fill_grid(points[:, s:e], cam, T, grid[:, :, s:e], valid[:, :, s:e])
        count = valid.sum(dim=1, dtype=dtype).unsqueeze(1)
    return grid.view(B * V, 1, M, 2), count


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

    def forward(self, heatmaps: Tensor, cameras: Mapping[str, Tensor], points: Tensor,
                cache_key: Hashable | None = None) -> Tensor:
        """heatmaps (B, V, C, h, w), cameras (batch keys K, R, t, dist, affine; (B, V, ...)),
        points (B, M, 3) or (M, 3) mm (float64 points keep sub-micrometre precision far from the
        origin) -> volume (B, C, M) in [0, 1]: the mean over the views in which
        the point is valid (0 if none). One grid_sample call for all samples, views and channels."""
        _check_inputs(heatmaps, cameras, self.heatmap_size)
        B, V, C, h, w = heatmaps.shape
        if points.dim() == 2:
            points = points.unsqueeze(0).expand(B, -1, -1)
        grid_dtype = torch.float64 if heatmaps.dtype == torch.float64 else torch.float32
        grid, count = self.grids(cameras, points.to(heatmaps.device), cache_key, grid_dtype)
        M = points.shape[1]
        sampled = F.grid_sample(heatmaps.reshape(B * V, C, h, w), grid.to(heatmaps.dtype), mode="bilinear",
                                padding_mode="zeros", align_corners=True)
        volume = sampled.view(B, V, C, M).sum(dim=1)
        return volume.div_(count.clamp(min=1.0).to(heatmaps.dtype)).clamp_(0.0, 1.0)
