"""root_net losses without 3D labels: synthetic roots (rendered -> projected -> V2V vs a 3D Gaussian
target) and root-volume consistency between augmented and identity copies.

Voxel grid convention (VoxelPose): voxel centres along each axis are
``linspace(center - size / 2, center + size / 2, voxels)`` in mm, volumes indexed (X, Y, Z).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from selfpose3d.config.schema import Config, SpaceConfig
from selfpose3d.losses.render import render_poses

VolumeFn = Callable[[torch.Tensor, dict], torch.Tensor]
Space = tuple[tuple[float, float, float], tuple[float, float, float]]  # (center_mm, size_mm)


def space_grid(space: SpaceConfig, device: torch.device | str = "cpu",
               dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Voxel centres (X, Y, Z, 3) in mm of a `SpaceConfig` (VoxelPose linspace convention, as
    models/projection.grid_points: first/last centres on the faces; a 1-voxel axis sits at the centre)."""
    axes = [(torch.linspace(-s / 2, s / 2, n, dtype=torch.float64) if n > 1 else torch.zeros(1, dtype=torch.float64)) + c
            for c, s, n in zip(space.center_mm, space.size_mm, space.voxels, strict=True)]
    return torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1).to(device=device, dtype=dtype)


def _uniform(shape: tuple[int, ...], low: float, high: float, generator: torch.Generator | None) -> torch.Tensor:
    device = generator.device if generator is not None else "cpu"
    return low + (high - low) * torch.rand(shape, generator=generator, device=device)


def sample_synthetic_roots(batch_size: int, max_roots: int, space: Space, z_range_mm: tuple[float, float],
                           generator: torch.Generator | None = None,
                           margin_mm: float = 400.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Random 3D roots for root_net training.

    space: (center_mm, size_mm) of the root grid; x, y uniform inside it shrunk by ``margin_mm`` per side;
    z uniform in ``z_range_mm`` (mid-hip heights, clipped to the space). Each sample gets 1..max_roots
    roots. Returns (roots (B, max_roots, 3) mm on the generator's device (CPU by default), mask
    (B, max_roots) bool; masked-out roots are zeros).
    """
    (cx, cy, cz), (sx, sy, sz) = space
    mx, my = min(margin_mm, sx / 4), min(margin_mm, sy / 4)
    zlo, zhi = max(z_range_mm[0], cz - sz / 2), min(z_range_mm[1], cz + sz / 2)
    shape = (batch_size, max_roots)
    xyz = torch.stack([
        _uniform(shape, cx - sx / 2 + mx, cx + sx / 2 - mx, generator),
        _uniform(shape, cy - sy / 2 + my, cy + sy / 2 - my, generator),
        _uniform(shape, min(zlo, zhi), max(zlo, zhi), generator),
    ], dim=-1)
    device = generator.device if generator is not None else "cpu"
    counts = torch.randint(1, max_roots + 1, (batch_size,), generator=generator, device=device)
    mask = torch.arange(max_roots, device=device) < counts[:, None]
    return xyz * mask[..., None], mask


def render_root_heatmaps(roots: torch.Tensor, mask: torch.Tensor, batch: dict, image_size: tuple[int, int],
                         heatmap_size: tuple[int, int], sigma: float, noise_std: float,
                         generator: torch.Generator | None = None) -> torch.Tensor:
    """2D root heatmaps (B, V, 1, h, w) of 3D roots (B, R, 3) mm in every view of ``batch``.

    Each root is projected with the view's camera and affine (so augmentations apply), drawn as a Gaussian
    (sigma in heatmap px), then Gaussian noise of std ``noise_std`` is added and the result clipped to [0, 1].
    """
    device = batch["K"].device
    roots = roots.to(device, torch.float32)
    heatmaps, _ = render_poses(roots[:, :, None], mask.to(device), batch, image_size, heatmap_size, sigma)
    if noise_std > 0:
        noise = torch.randn(heatmaps.shape, generator=generator,
                            device=generator.device if generator is not None else "cpu")
        heatmaps = heatmaps + noise_std * noise.to(device)
    return heatmaps.clamp(0.0, 1.0)


def gaussian_volume_target(roots: torch.Tensor, mask: torch.Tensor, grid: torch.Tensor | SpaceConfig,
                           sigma_mm: float) -> torch.Tensor:
    """3D Gaussian target (B, X, Y, Z): per voxel the max over valid roots of exp(-d^2 / (2 sigma^2)).

    roots: (B, R, 3) mm; mask: (B, R) bool; grid: voxel centres (X, Y, Z, 3) mm or a `SpaceConfig`.
    All-false masks give an all-zero target.
    """
    if isinstance(grid, SpaceConfig):
        grid = space_grid(grid, roots.device, torch.float32)
    grid = grid.to(roots.device)
    roots = roots.to(grid.dtype)
    d2 = ((grid[None, None] - roots[:, :, None, None, None]) ** 2).sum(-1)  # (B, R, X, Y, Z)
    gauss = torch.exp(-d2 / (2.0 * sigma_mm**2)) * mask.to(grid.dtype)[:, :, None, None, None]
    if gauss.shape[1] == 0:
        return gauss.new_zeros((roots.shape[0], *grid.shape[:3]))
    return gauss.amax(dim=1)


def root_input_heatmaps(root_heatmaps: torch.Tensor, cfg: Config) -> torch.Tensor:
    """Shape root heatmaps (B, V, 1, h, w) for root_net's input: unchanged for ``model.root_input ==
    "root"``; for "all" (VoxelPose), a (B, V, J, h, w) stack of zeros with the root channel filled."""
    if cfg.model.root_input == "root":
        return root_heatmaps
    b, v, _, h, w = root_heatmaps.shape
    full = root_heatmaps.new_zeros((b, v, cfg.model.num_joints, h, w))
    full[:, :, cfg.model.root_joint] = root_heatmaps[:, :, 0]
    return full


def synthetic_root_loss(volume_fn: VolumeFn, batch: dict, cfg: Config,
                        generator: torch.Generator | None = None,
                        grid: torch.Tensor | None = None) -> torch.Tensor:
    """weight * MSE(volume_fn(rendered synthetic root heatmaps, batch), 3D Gaussian target).

    volume_fn(heatmaps (B, V, Cin, h, w), batch) -> (B, X, Y, Z) is root_net's projection + V2V over
    ``cfg.model.root_space``; grid: its voxel centres (X, Y, Z, 3) mm (default: `space_grid`). Roots,
    rendering and weights come from ``cfg.loss`` / ``cfg.dataset``. Returns a scalar.
    """
    space = cfg.model.root_space
    bsz = batch["K"].shape[0]
    roots, mask = sample_synthetic_roots(bsz, cfg.loss.synthetic_roots_max, (space.center_mm, space.size_mm),
                                         cfg.loss.synthetic_root_z_mm, generator)
    heatmaps = render_root_heatmaps(roots, mask, batch, cfg.dataset.image_size, cfg.dataset.heatmap_size,
                                    cfg.dataset.heatmap_sigma_px, cfg.loss.synthetic_root_noise_std, generator)
    volume = volume_fn(root_input_heatmaps(heatmaps, cfg), batch)
    target = gaussian_volume_target(roots.to(volume.device), mask.to(volume.device),
                                    space if grid is None else grid, cfg.loss.root_target_sigma_mm)
    if volume.shape != target.shape:
        raise ValueError(f"synthetic_root_loss: root volume shape {tuple(volume.shape)} != target shape "
                         f"{tuple(target.shape)} (model.root_space.voxels)")
    return cfg.loss.synthetic_root_weight * ((volume - target.to(volume)) ** 2).mean()


def root_consistency_loss(vol_aug1: torch.Tensor, vol_aug2: torch.Tensor, vol_identity: torch.Tensor,
                          weight: float) -> torch.Tensor:
    """weight * (MSE(vol_aug1, sg(vol_identity)) + MSE(vol_aug2, sg(vol_identity))); volumes (B, X, Y, Z).

    The identity copy's volume is detached (stop-gradient); pass ``cfg.loss.root_consistency_weight``.
    """
    target = vol_identity.detach()
    return weight * (((vol_aug1 - target) ** 2).mean() + ((vol_aug2 - target) ** 2).mean())
