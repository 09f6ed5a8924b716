"""Benchmark the batched heatmap -> voxel projection against a straightforward reference.

The reference (written here) loops over batch samples and views, projects the sample's points with
numpy (`geometry.cameras.project_points`, float64), applies the affine, normalises and calls one
``grid_sample`` per view, accumulating the in-view mean. Both must agree to 1e-5. Two timings from one run:

* root grid (``model.root_space``, cached sampling grid, steady state) and
* pose cubes (``model.max_proposals`` cubes of ``model.pose_cube_voxels``, not cached), through
  ``ProjectionLayer.cubes`` as `PoseNet` calls it; for comparison the same cube points also go through
  the generic ``ProjectionLayer.forward`` (timed and checked, no speed-up requirement). ``cubes`` returns
  its (B, C, M) volume as a view of channels-last (B, M, C) memory (PoseNet's Conv3d takes that layout as
  is); a last line times ``cubes(...).contiguous()`` for a caller that needs (B, C, M) memory.

Usage: ``python benchmarks/bench_projection.py [--preset panoptic|tiny] [--repeats 3] [--threads N]``
(``--threads N``, default torch's thread count, sets torch's threads and, through threadpoolctl when
installed, numpy's BLAS threads, so both sides run with N threads; an unpinned OpenBLAS spinning on a busy
2-core machine slows the reference 3-7x and makes the ratio meaningless. The reference's per-view ops are
too small to use a second thread, the batched layer's are not: run ``--threads 1`` and the default to see
both the single-core and the whole-machine ratio.)
"""

from __future__ import annotations

import argparse
import contextlib
import time
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

from selfpose3d.config.loader import load_config
from selfpose3d.config.schema import Config
from selfpose3d.geometry.cameras import Camera, camera_depth, project_points, stack_cameras
from selfpose3d.geometry.transforms import apply_affine, resize_affine
from selfpose3d.models.projection import ProjectionLayer, cube_points, grid_points

TOLERANCE = 1e-5


def look_at(name: str, centre: np.ndarray, target: np.ndarray, K: np.ndarray, dist: np.ndarray,
            resolution: tuple[int, int]) -> Camera:
    """Camera at ``centre`` mm looking at ``target`` mm (z up), x_cam = R X + t."""
    f = (target - centre) / np.linalg.norm(target - centre)
    r = np.cross(f, [0.0, 0.0, 1.0])
    r /= np.linalg.norm(r)
    R = np.stack([r, np.cross(f, r), f])
    return Camera(name, K=K, R=R, t=-R @ centre, dist=dist, resolution=resolution)


def build_cameras(cfg: Config, rng: np.random.Generator) -> list[Camera]:
    """num_views cameras on a 4.5 m ring, Panoptic-HD-like intrinsics and distortion, scaled to the preset."""
    res = (1920, 1080) if cfg.dataset.kind == "panoptic" else tuple(cfg.synth.image_resolution)
    s = res[0] / 1920
    cams = []
    for v in range(cfg.dataset.num_views):
        a = 2 * np.pi * v / cfg.dataset.num_views + rng.normal() * 0.05
        centre = np.array([4500 * np.cos(a), 4500 * np.sin(a), 2000 + rng.normal() * 100])
        K = np.array([[1400 * s, 0, res[0] / 2 + rng.normal() * 5 * s], [0, 1400 * s, res[1] / 2], [0, 0, 1]])
        dist = np.array([-0.27, 0.2, 1e-4, -2e-4, -0.04]) + rng.normal(size=5) * [0.01, 0.01, 1e-4, 1e-4, 0.005]
        cams.append(look_at(f"00_{v:02d}", centre, np.array([0.0, -500.0, 900.0]) + rng.normal(size=3) * 100,
                            K, dist, res))
    return cams


def smooth_heatmaps(B: int, V: int, C: int, h: int, w: int, gen: torch.Generator) -> torch.Tensor:
    """Network-like heatmaps (B, V, C, h, w): a few Gaussian blobs (sigma 3 px) per map, peaks in (0, 1]."""
    yy, xx = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32),
                            indexing="ij")
    out = torch.zeros(B, V, C, h, w)
    for _ in range(6):
        cx = torch.rand(B, V, C, 1, 1, generator=gen) * w
        cy = torch.rand(B, V, C, 1, 1, generator=gen) * h
        peak = torch.rand(B, V, C, 1, 1, generator=gen)
        out = torch.maximum(out, peak * torch.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * 3.0**2)))
    return out


def reference_volume(heatmaps: torch.Tensor, cams: list[list[Camera]], affines: np.ndarray,
                     points: list[np.ndarray], image_size: tuple[int, int]) -> torch.Tensor:
    """Per sample b and per view: numpy projection of points[b] (M, 3) mm, one grid_sample per view.

    heatmaps (B, V, C, h, w) -> (B, C, M): mean over views where the point is in front of the camera,
    within r^2 <= 4 and inside the heatmap; clamped to [0, 1].
    """
    B, V, C, h, w = heatmaps.shape
    out = []
    for b in range(B):
        acc = torch.zeros(C, len(points[b]))
        count = torch.zeros(len(points[b]))
        for v in range(V):
            cam = cams[b][v]
            xyz = points[b] @ cam.R.T + cam.t
            r2 = ((xyz[:, :2] / xyz[:, 2:]) ** 2).sum(-1)
            px = apply_affine(project_points(points[b], cam), affines[b, v])
            g = px * [w / image_size[0], h / image_size[1]] / [w - 1, h - 1] * 2 - 1
            ok = torch.from_numpy((camera_depth(points[b], cam) >= 1.0) & (r2 <= 4.0) & (np.abs(g) <= 1).all(-1))
            grid = torch.from_numpy(g).float().view(1, 1, -1, 2)
            sampled = F.grid_sample(heatmaps[b, v][None], grid, align_corners=True)[0, :, 0]
            acc += sampled * ok
            count += ok
        out.append((acc / count.clamp(min=1)).clamp(0, 1))
    return torch.stack(out)


def reference_cubes(heatmaps: torch.Tensor, cams: list[list[Camera]], affines: np.ndarray, roots: np.ndarray,
                    offsets: np.ndarray, image_size: tuple[int, int]) -> torch.Tensor:
    """Pose cubes: per sample, all K cubes' points (K*N, 3) go through `reference_volume` -> (B, C, K*N)."""
    points = [(roots[b][:, None, :] + offsets[None]).reshape(-1, 3) for b in range(len(roots))]
    return reference_volume(heatmaps, cams, affines, points, image_size)


def timed(fn: Callable[[], torch.Tensor], repeats: int) -> tuple[float, torch.Tensor]:
    """Best (minimum) wall time (s) over ``repeats`` calls, robust to other load, and the last result."""
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return min(times), result


def run(preset: str, repeats: int, seed: int = 0) -> dict[str, float]:
    """Build the preset's shapes, check both implementations agree, time them; returns the timings."""
    cfg = load_config(preset)
    rng, gen = np.random.default_rng(seed), torch.Generator().manual_seed(seed)
    m, d = cfg.model, cfg.dataset
    cams = [build_cameras(cfg, rng)]
    V, J, (w, h) = d.num_views, m.num_joints, d.heatmap_size
    affines = np.tile(resize_affine(cams[0][0].resolution, d.image_size), (1, V, 1, 1))
    stacked = stack_cameras(cams[0])
    batch = {k: stacked[k][None] for k in ("K", "R", "t", "dist")}
    batch["affine"] = torch.tensor(affines, dtype=torch.float32)
    # the reference sees exactly the (float32) batch the model sees
    ref_cams = [[Camera(c.name, K=batch["K"][0, v].double().numpy(), R=batch["R"][0, v].double().numpy(),
                        t=batch["t"][0, v].double().numpy(), dist=batch["dist"][0, v].double().numpy(),
                        resolution=c.resolution) for v, c in enumerate(cams[0])]]
    affines = batch["affine"].double().numpy()
    heatmaps = smooth_heatmaps(1, V, J, h, w, gen)
    root_in = heatmaps[:, :, m.root_joint : m.root_joint + 1] if m.root_input == "root" else heatmaps
    space = m.root_space
    root_pts = grid_points(space.center_mm, space.size_mm, space.voxels)
    offsets = grid_points((0, 0, 0), m.pose_cube_mm, m.pose_cube_voxels, dtype=torch.float64)
    roots = torch.tensor(rng.uniform([-2500, -3000, 800], [2500, 2000, 1000], size=(1, m.max_proposals, 3)),
                         dtype=torch.float32)
    layer = ProjectionLayer(d.image_size, d.heatmap_size)

    print(f"preset {preset}: {V} views, heatmaps {J}x{h}x{w}, root grid {tuple(space.voxels)} "
          f"({root_pts.shape[0]} pts, {root_in.shape[2]} ch), {m.max_proposals} pose cubes "
          f"{tuple(m.pose_cube_voxels)} ({m.max_proposals * offsets.shape[0]} pts, {J} ch), "
          f"torch threads {torch.get_num_threads()}, repeats {repeats}")
    layer(root_in, batch, root_pts, cache_key="root")  # fill the cache: steady state below
    t_root, ours_root = timed(lambda: layer(root_in, batch, root_pts, cache_key="root"), repeats)
    t_root_ref, ref_root = timed(lambda: reference_volume(root_in, ref_cams, affines, [root_pts.double().numpy()],
                                                          d.image_size), repeats)
    t_pose, ours_pose = timed(lambda: layer.cubes(heatmaps, batch, roots, m.pose_cube_mm, m.pose_cube_voxels),
                              repeats)
    t_points, ours_points = timed(lambda: layer(heatmaps, batch, cube_points(roots.double(), offsets)), repeats)
    t_contig, _ = timed(lambda: layer.cubes(heatmaps, batch, roots, m.pose_cube_mm, m.pose_cube_voxels).contiguous(),
                        repeats)
    t_pose_ref, ref_pose = timed(lambda: reference_cubes(heatmaps, ref_cams, affines, roots.double().numpy(),
                                                         offsets.numpy(), d.image_size), repeats)
    diff_root = float((ours_root - ref_root).abs().max())
    diff_pose = float((ours_pose - ref_pose).abs().max())
    diff_points = float((ours_points - ref_pose).abs().max())
    assert diff_root <= TOLERANCE, f"root grid: max abs diff {diff_root:.3g} > {TOLERANCE}"
    assert diff_pose <= TOLERANCE, f"pose cubes: max abs diff {diff_pose:.3g} > {TOLERANCE}"
    assert diff_points <= TOLERANCE, f"pose cubes as points: max abs diff {diff_points:.3g} > {TOLERANCE}"
    print(f"root grid  (cached):   batched {t_root * 1e3:9.1f} ms  reference {t_root_ref * 1e3:9.1f} ms  "
          f"speed-up {t_root_ref / t_root:6.1f}x  max|diff| {diff_root:.1e}")
    print(f"pose cubes (uncached): batched {t_pose * 1e3:9.1f} ms  reference {t_pose_ref * 1e3:9.1f} ms  "
          f"speed-up {t_pose_ref / t_pose:6.1f}x  max|diff| {diff_pose:.1e}")
    print(f"  (same cubes as a (B, K*N, 3) point tensor through forward: {t_points * 1e3:9.1f} ms  "
          f"speed-up {t_pose_ref / t_points:6.1f}x  max|diff| {diff_points:.1e})")
    print(f"  (same cubes copied to contiguous (B, C, M) memory after the layer:   {t_contig * 1e3:9.1f} ms  "
          f"speed-up {t_pose_ref / t_contig:6.1f}x)")
    return {"root": t_root, "root_ref": t_root_ref, "pose": t_pose, "pose_ref": t_pose_ref, "pose_points": t_points,
            "pose_contiguous": t_contig}


def main() -> None:
    """CLI entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", choices=("panoptic", "tiny"), default="panoptic")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None,
                        help="threads for torch AND numpy's BLAS, both sides (default: torch's default, here "
                             f"{torch.get_num_threads()})")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    threads = args.threads or torch.get_num_threads()
    torch.set_num_threads(threads)
    blas: contextlib.AbstractContextManager = contextlib.nullcontext()
    try:
        from threadpoolctl import threadpool_limits
        blas = threadpool_limits(threads)
    except ImportError:
        print("threadpoolctl not installed: numpy BLAS threads not pinned (set OPENBLAS_NUM_THREADS)")
    with blas, torch.no_grad():
        run(args.preset, max(args.repeats, 1), args.seed)


if __name__ == "__main__":
    main()
