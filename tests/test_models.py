"""Tests for selfpose3d/models: shapes, gradients, projection vs a naive per-view reference, grid cache,
soft-argmax, NMS proposals, pretrained-weight loading and paper-scale instantiation."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision

from selfpose3d.config.loader import load_config
from selfpose3d.geometry.cameras import Camera, camera_depth, project_points, stack_cameras
from selfpose3d.geometry.transforms import apply_affine, resize_affine
from selfpose3d.models import (
    PoseResNet,
    PretrainedWeightsError,
    ProjectionError,
    ProjectionLayer,
    SelfPose3dModel,
    V2VNet,
    cube_points,
    get_proposals,
    grid_points,
    index_to_mm,
    projection,
    sampling,
    soft_argmax,
)
from selfpose3d.models.pose_resnet import load_trunk_weights

RES = (384, 216)  # tiny preset's original image resolution (synth.image_resolution)


def look_at(name: str, centre: np.ndarray, target: np.ndarray, K: np.ndarray, dist: np.ndarray | None = None,
            resolution: tuple[int, int] = RES) -> Camera:
    """A camera at ``centre`` (mm) looking at ``target`` (mm), z up."""
    f = (target - centre) / np.linalg.norm(target - centre)
    r = np.cross(f, [0.0, 0.0, 1.0])
    r /= np.linalg.norm(r)
    R = np.stack([r, np.cross(f, r), f])
    return Camera(name, K=K, R=R, t=-R @ centre, dist=np.zeros(5) if dist is None else dist, resolution=resolution)


def ring_cameras(views: int, seed: int = 0, radius: float = 4500.0) -> list[Camera]:
    """Cameras on a ring around the origin, slightly jittered, with small distortion."""
    rng = np.random.default_rng(seed)
    K = np.array([[300.0, 0.0, 192.0], [0.0, 300.0, 108.0], [0.0, 0.0, 1.0]])
    cams = []
    for v in range(views):
        a = 2 * np.pi * v / views + rng.normal() * 0.1
        centre = np.array([radius * np.cos(a), radius * np.sin(a), 2200.0 + rng.normal() * 100])
        dist = rng.normal(size=5) * [0.05, 0.01, 1e-3, 1e-3, 0.005]
        cams.append(look_at(f"c{v}", centre, np.array([0.0, -300.0, 900.0]) + rng.normal(size=3) * 200, K, dist))
    return cams


def make_batch(cams_per_sample: list[list[Camera]], affines: np.ndarray, image_hw: tuple[int, int] = (128, 192),
               seed: int = 0) -> dict:
    """Batch dict with K, R, t, dist (B, V, ...), affine (B, V, 2, 3) and random images."""
    stacks = [stack_cameras(cams) for cams in cams_per_sample]
    batch = {k: torch.stack([s[k] for s in stacks]) for k in ("K", "R", "t", "dist")}
    batch["affine"] = torch.tensor(affines, dtype=torch.float32)
    B, V = len(cams_per_sample), len(cams_per_sample[0])
    batch["images"] = torch.randn(B, V, 3, *image_hw, generator=torch.Generator().manual_seed(seed))
    return batch


def tiny_batch(B: int = 1, V: int = 5) -> dict:
    affine = resize_affine(RES, (192, 128))
    return make_batch([ring_cameras(V, seed=b) for b in range(B)], np.tile(affine, (B, V, 1, 1)))


def naive_volume(heatmaps: torch.Tensor, cams: list[list[Camera]], affines: np.ndarray, points: np.ndarray,
                 image_size: tuple[int, int]) -> torch.Tensor:
    """Reference: loops over samples and views, numpy float64 projection, one grid_sample per view."""
    B, V, C, h, w = heatmaps.shape
    out = torch.zeros(B, C, points.shape[1], dtype=torch.float64)
    count = torch.zeros(B, 1, points.shape[1], dtype=torch.float64)
    for b in range(B):
        for v in range(V):
            px = apply_affine(project_points(points[b], cams[b][v]), affines[b, v])
            g = px * [w / image_size[0], h / image_size[1]] / [w - 1, h - 1] * 2 - 1
            cam = points[b] @ cams[b][v].R.T + cams[b][v].t
            r2 = ((cam[:, :2] / cam[:, 2:]) ** 2).sum(-1)
            ok = (camera_depth(points[b], cams[b][v]) >= 1.0) & (r2 <= 4.0) & (np.abs(g) <= 1).all(-1)
            grid = torch.tensor(g, dtype=heatmaps.dtype).view(1, 1, -1, 2)
            sampled = F.grid_sample(heatmaps[b, v][None], grid, align_corners=True)[0, :, 0].double()
            out[b] += sampled * torch.tensor(ok)
            count[b, 0] += torch.tensor(ok, dtype=torch.float64)
    return (out / count.clamp(min=1)).clamp(0, 1)


@pytest.fixture(scope="module")
def tiny_model() -> SelfPose3dModel:
    torch.manual_seed(0)
    return SelfPose3dModel(load_config("tiny"))


def test_tiny_output_shapes(tiny_model: SelfPose3dModel) -> None:
    cfg = tiny_model.cfg
    batch = tiny_batch(B=2)
    with torch.no_grad():
        out = tiny_model.eval()(batch, all_proposals=True)
    J, K = cfg.model.num_joints, cfg.model.max_proposals
    assert out["heatmaps"].shape == (2, 5, J, 32, 48)
    assert out["attention"].shape == (2, 5, J, 32, 48)
    assert float(out["attention"].min()) > 0 and float(out["attention"].max()) < 1
    assert out["root_volume"].shape == (2, *cfg.model.root_space.voxels)
    assert out["proposals"].shape == (2, K, 5)
    assert out["poses"].shape == (2, K, J, 3)
    assert torch.isfinite(out["poses"]).all()
    # poses lie inside their proposal's cube
    offset = (out["poses"] - out["proposals"][:, :, None, :3]).abs()
    assert float(offset.max()) <= cfg.model.pose_cube_mm[0] / 2 + 1e-3


def test_forward_backward_reaches_every_net() -> None:
    torch.manual_seed(1)
    model = SelfPose3dModel(load_config("tiny")).train()
    out = model(tiny_batch(), all_proposals=True)
    loss = out["heatmaps"].mean() + out["attention"].mean() + out["root_volume"].mean() + out["poses"].mean() / 1000
    loss.backward()
    for name in ("heatmap_net", "attn_net", "root_net", "pose_net"):
        grads = [p.grad for p in getattr(model, name).parameters() if p.grad is not None]
        assert grads, name
        assert all(torch.isfinite(g).all() for g in grads), name
        assert any(float(g.abs().sum()) > 0 for g in grads), name


def test_projection_matches_naive_reference() -> None:
    rng = np.random.default_rng(3)
    B, V, C, h, w = 2, 3, 4, 12, 16
    image_size = (64, 48)
    cams = [ring_cameras(V, seed=10 + b) for b in range(B)]
    affines = np.stack([[resize_affine(RES, image_size, rng.uniform(-40, 40), rng.uniform(0.8, 1.2))
                         for _ in range(V)] for _ in range(B)])
    batch = make_batch(cams, affines, image_hw=(48, 64))
    points = rng.uniform([-6000, -6000, -500], [6000, 6000, 2500], size=(B, 700, 3))  # some behind cameras
    heatmaps = torch.rand(B, V, C, h, w, generator=torch.Generator().manual_seed(0)) * 1.2
    layer = ProjectionLayer(image_size, (w, h))
    ours = layer(heatmaps, batch, torch.tensor(points, dtype=torch.float32))
    ref = naive_volume(heatmaps, cams, affines, points, image_size)
    assert ours.shape == (B, C, 700)
    assert float((ours.double() - ref).abs().max()) <= 1e-5
    assert 0.2 < float((ref > 0).double().mean()) < 1.0  # both in- and out-of-view points exercised


def test_grid_cache_hits_and_camera_change_misses() -> None:
    batch = tiny_batch()
    layer = ProjectionLayer((192, 128), (48, 32))
    points = grid_points((0, -500, 800), (8000, 8000, 2000), (8, 8, 4)).expand(1, -1, -1)
    g1, c1 = layer.grids(batch, points, cache_key="root")
    g2, c2 = layer.grids(batch, points, cache_key="root")
    assert (layer.hits, layer.misses) == (1, 1)
    assert g2 is g1 and c2 is c1
    moved = dict(batch, t=batch["t"] + torch.tensor([0.0, 0.0, 50.0]))
    g3, _ = layer.grids(moved, points, cache_key="root")
    assert (layer.hits, layer.misses) == (1, 2)
    assert not torch.equal(g3, g1)
    assert torch.equal(layer.grids(batch, points, cache_key="root")[0], g1) and layer.hits == 2
    uncached, _ = layer.grids(batch, points)
    assert torch.equal(uncached, g1) and layer.misses == 2


def test_point_at_view_centre_samples_the_peak() -> None:
    # heatmap pixel (24, 16) <- input px (96, 64) <- original px (192, 108) with the tiny letterbox affine
    K = np.array([[300.0, 0.0, 192.0], [0.0, 300.0, 108.0], [0.0, 0.0, 1.0]])
    target = np.array([100.0, 200.0, 900.0])
    cams = [look_at("a", np.array([4000.0, 0.0, 2000.0]), target, K),
            look_at("b", np.array([-3000.0, 3000.0, 1500.0]), target, K),
            look_at("c", np.array([0.0, -4000.0, 1800.0]), np.array([3000.0, -4000.0, 1800.0]), K)]  # looks away
    affine = resize_affine(RES, (192, 128))
    batch = make_batch([cams], np.tile(affine, (1, 3, 1, 1)))
    yy, xx = torch.meshgrid(torch.arange(32.0), torch.arange(48.0), indexing="ij")
    heatmaps = torch.zeros(1, 3, 2, 32, 48)
    heatmaps[0, 0, 0] = 0.9 * torch.exp(-((xx - 24) ** 2 + (yy - 16) ** 2) / 8)
    heatmaps[0, 0, 1] = 0.6 * torch.exp(-((xx - 24) ** 2 + (yy - 16) ** 2) / 8)
    heatmaps[0, 2] = 1.0  # view c cannot see the target: must not count
    volume = ProjectionLayer((192, 128), (48, 32))(heatmaps, batch, torch.tensor(target[None], dtype=torch.float32))
    # view a samples its peak, view b samples 0: the mean over the 2 valid views is half the peak
    assert torch.allclose(volume[0, :, 0], torch.tensor([0.45, 0.3]), atol=1e-5)


def test_soft_argmax_recovers_peak_in_mm() -> None:
    offsets = grid_points((0, 0, 0), (2000, 2000, 2000), (16, 16, 16))
    vol = torch.zeros(2, 3, 16, 16, 16)
    vol[0, 0, 3, 12, 7] = 1.0
    vol[0, 1, 0, 0, 15] = 1.0
    vol[1, 2, 8, 8, 8] = vol[1, 2, 9, 8, 8] = 1.0  # two equal peaks -> midpoint
    loc = soft_argmax(vol.flatten(2), offsets, beta=100.0)
    step = 2000 / 15
    assert torch.allclose(loc[0, 0], torch.tensor([3, 12, 7]) * step - 1000, atol=1e-2)
    assert torch.allclose(loc[0, 1], torch.tensor([-1000.0, -1000.0, 1000.0]), atol=1e-2)
    assert torch.allclose(loc[1, 2], torch.tensor([8.5, 8, 8]) * step - 1000, atol=1e-2)


def test_nms_picks_separated_peaks() -> None:
    center, size, voxels = (0.0, -500.0, 800.0), (8000.0, 8000.0, 2000.0), (32, 32, 8)
    vol = torch.zeros(1, *voxels)
    vol[0, 5, 6, 3] = 0.9
    vol[0, 5, 7, 3] = 0.85  # neighbour of the first peak: suppressed
    vol[0, 20, 25, 4] = 0.7
    vol[0, 30, 2, 1] = 0.2  # below threshold
    props = get_proposals(vol, center, size, k=4, kernel=3, threshold=0.3)
    assert props.shape == (1, 4, 5)
    assert torch.allclose(props[0, :3, 3], torch.tensor([0.9, 0.7, 0.2]))
    assert props[0, :, 4].tolist() == [1.0, 1.0, 0.0, 0.0]
    grid = grid_points(center, size, voxels).view(*voxels, 3)
    assert torch.allclose(props[0, 0, :3], grid[5, 6, 3], atol=1e-3)
    assert torch.allclose(props[0, 1, :3], grid[20, 25, 4], atol=1e-3)


def test_index_to_mm_inverts_grid_points() -> None:
    voxels = (4, 8, 4)
    idx = torch.stack(torch.meshgrid(*[torch.arange(n) for n in voxels], indexing="ij"), -1).reshape(-1, 3)
    mm = index_to_mm(idx, (10.0, -20.0, 800.0), (800.0, 1600.0, 400.0), voxels)
    assert torch.allclose(mm, grid_points((10.0, -20.0, 800.0), (800.0, 1600.0, 400.0), voxels), atol=1e-3)


def test_cube_points_are_centred_on_roots(tiny_model: SelfPose3dModel) -> None:
    roots = torch.tensor([[[0.0, 0.0, 900.0], [1000.0, -500.0, 800.0]]])
    pts = cube_points(roots, tiny_model.pose_net.offsets)
    assert pts.shape == (1, 2 * int(np.prod(tiny_model.cfg.model.pose_cube_voxels)), 3)
    assert torch.allclose(pts.view(1, 2, -1, 3).mean(2), roots, atol=1e-3)


def test_pose_net_is_differentiable_wrt_heatmaps(tiny_model: SelfPose3dModel) -> None:
    heat = torch.rand(1, 5, 15, 32, 48, requires_grad=True)
    roots = torch.tensor([[[0.0, -300.0, 900.0], [800.0, 200.0, 900.0]]])
    poses = tiny_model.eval().estimate(heat, tiny_batch(), roots)
    assert poses.shape == (1, 2, 15, 3)
    poses[..., 0].sum().backward()
    assert heat.grad is not None and float(heat.grad.abs().sum()) > 0


def test_forward_estimates_only_valid_proposals() -> None:
    torch.manual_seed(2)
    model = SelfPose3dModel(load_config("tiny")).eval()
    batch = tiny_batch()
    with torch.no_grad():
        model.root_net.v2v.output_layer.bias.fill_(-1.0)  # every score below the threshold
        out = model(batch)
        assert float(out["proposals"][..., 4].sum()) == 0 and float(out["poses"].abs().sum()) == 0
        model.root_net.v2v.output_layer.bias.fill_(0.5)  # every score above it
        out = model(batch)
    assert float(out["proposals"][..., 4].min()) == 1
    assert float(out["poses"].abs().amin(dim=(2, 3)).min()) > 0


def test_root_volume_from_synthetic_heatmaps_has_gradient(tiny_model: SelfPose3dModel) -> None:
    batch = tiny_batch()
    heat = torch.rand(1, 5, 1, 32, 48, requires_grad=True)
    vol = tiny_model.train().root_net.volume_from_heatmaps(heat, batch)
    assert vol.shape == (1, 32, 32, 8)
    vol.sum().backward()
    assert heat.grad is not None and float(heat.grad.abs().sum()) > 0
    with pytest.raises(ValueError, match="root_input"):
        tiny_model.root_net.volume_from_heatmaps(torch.rand(1, 5, 15, 32, 48), batch)
    with pytest.raises(ProjectionError, match="heatmap_size"):
        tiny_model.root_net.volume_from_heatmaps(torch.rand(1, 5, 1, 30, 48), batch)


def test_stage_parameters_and_shared_attention() -> None:
    model = SelfPose3dModel(load_config("tiny", ["model.attn_backbone=shared"]))
    assert model.attn_net.trunk is model.heatmap_net.trunk
    ids = {name: {id(p) for p in model.stage_parameters(name)} for name in
           ("backbone_2d", "root_net", "pose_net", "finetune")}
    assert ids["finetune"] == {id(p) for p in model.parameters()}
    assert len(model.stage_parameters("finetune")) == len(ids["finetune"])  # deduplicated
    assert ids["root_net"] == {id(p) for p in model.root_net.parameters()}
    assert {id(p) for p in model.heatmap_net.trunk.parameters()} <= ids["pose_net"]  # shared trunk
    heat, attn = model.forward_2d(torch.randn(1, 2, 3, 128, 192))
    assert heat.shape == attn.shape == (1, 2, 15, 32, 48)
    model.set_stage("root_net")
    model.train()
    assert model.root_net.training and not model.heatmap_net.training and not model.pose_net.training
    with pytest.raises(ValueError, match="stage"):
        model.stage_parameters("warmup")


def test_pretrained_backbone_loads_local_file_and_reports_bad_paths(tmp_path) -> None:
    ref = torchvision.models.resnet18(weights=None)
    path = tmp_path / "r18.pth"
    torch.save(ref.state_dict(), path)
    net = PoseResNet("resnet18", 15, 1, 8, pretrained=str(path))
    assert torch.equal(net.trunk.layer3[0].conv1.weight, ref.layer3[0].conv1.weight)
    with pytest.raises(PretrainedWeightsError, match="missing.pth: file not found"):
        load_trunk_weights(net.trunk, tmp_path / "missing.pth")
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(PretrainedWeightsError, match="bad.pth: not a loadable"):
        load_trunk_weights(net.trunk, bad)
    r50 = tmp_path / "r50.pth"
    torch.save(torchvision.models.resnet50(weights=None).state_dict(), r50)
    with pytest.raises(PretrainedWeightsError, match="r50.pth"):
        load_trunk_weights(net.trunk, r50)


def _count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_paper_scale_instantiates_with_expected_sizes() -> None:
    cfg = load_config("panoptic")
    model = SelfPose3dModel(cfg)
    r50, r18 = torchvision.models.resnet50(weights=None), torchvision.models.resnet18(weights=None)
    assert _count(model.heatmap_net.trunk) == _count(r50) - _count(r50.fc)
    assert _count(model.attn_net.trunk) == _count(r18) - _count(r18.fc)
    assert model.root_net.points.shape == (80 * 80 * 20, 3)
    assert model.pose_net.offsets.shape == (64**3, 3)
    with torch.no_grad():
        v2v = V2VNet(15, 15, cfg.model.v2v_width).eval()
        assert v2v(torch.rand(1, 15, 8, 8, 8)).shape == (1, 15, 8, 8, 8)
        assert V2VNet(1, 1, 32).eval()(torch.rand(1, 1, 16, 16, 4)).shape == (1, 1, 16, 16, 4)
        heat = model.heatmap_net.eval()(torch.randn(1, 3, 128, 64))
    assert heat.shape == (1, 15, 32, 16)


@pytest.mark.slow
def test_paper_scale_forward_one_sample() -> None:
    cfg = load_config("panoptic")
    model = SelfPose3dModel(cfg).eval()
    res = (1920, 1080)
    K = np.array([[1400.0, 0.0, 960.0], [0.0, 1400.0, 540.0], [0.0, 0.0, 1.0]])
    cams = [look_at(f"c{v}", np.array([3500 * np.cos(v * 1.2), 3500 * np.sin(v * 1.2), 2000.0]),
                    np.array([0.0, -500.0, 900.0]), K, resolution=res) for v in range(5)]
    batch = make_batch([cams], np.tile(resize_affine(res, (960, 512)), (1, 5, 1, 1)), image_hw=(512, 960))
    start = time.perf_counter()
    with torch.no_grad():
        out = model(batch, all_proposals=True)
    print(f"paper-scale forward: {time.perf_counter() - start:.1f} s")
    assert out["heatmaps"].shape == (1, 5, 15, 128, 240)
    assert out["root_volume"].shape == (1, 80, 80, 20)
    assert out["poses"].shape == (1, 10, 15, 3) and torch.isfinite(out["poses"]).all()


def test_cubes_match_point_path_with_and_without_autograd(monkeypatch: pytest.MonkeyPatch) -> None:
    # ProjectionLayer.cubes (separable camera coordinates, block-wise sampling) == forward on the explicit
    # cube points, and the autograd path (one grid_sample) gives the same volume as the no-grad blocks
    monkeypatch.setattr(projection, "CHUNK_POINTS", 100)  # several blocks per cube (2 x-slices = 70 points)
    monkeypatch.setattr(projection, "SAMPLE_POINTS", 32)
    B, V, C, h, w = 2, 3, 4, 32, 48
    batch = make_batch([ring_cameras(V, seed=20 + b) for b in range(B)],
                       np.tile(resize_affine(RES, (192, 128)), (B, V, 1, 1)))
    roots = torch.tensor([[[0.0, -300.0, 900.0], [1500.0, 800.0, 1000.0]],
                          [[-2500.0, 2000.0, 800.0], [4000.0, 0.0, 4000.0]]])  # last cube partly out of view
    heat = torch.rand(B, V, C, h, w, generator=torch.Generator().manual_seed(1))
    layer = ProjectionLayer((192, 128), (w, h))
    size, voxels = (2000.0, 1600.0, 1200.0), (9, 7, 5)
    points = cube_points(roots.double(), grid_points((0, 0, 0), size, voxels, dtype=torch.float64))
    with torch.no_grad():
        ours = layer.cubes(heat, batch, roots, size, voxels)
        ref = layer(heat, batch, points)
    assert ours.shape == (B, C, 2 * 9 * 7 * 5)
    assert float((ours - ref).abs().max()) <= 1e-6
    assert 0.05 < float((ref == 0).double().mean()) < 0.9  # in- and out-of-view voxels
    heat.requires_grad_(True)
    graded = layer.cubes(heat, batch, roots, size, voxels)
    assert torch.equal(graded.detach(), ours)
    graded.sum().backward()
    assert heat.grad is not None and float(heat.grad.abs().sum()) > 0


def grid_sample_volume(heat: torch.Tensor, batch: dict, points: torch.Tensor, image_size: tuple[int, int]) -> torch.Tensor:
    """The grid_sample formulation (the cached root path's): one grid_sample per view, sum / valid views."""
    B, V, C, h, w = heat.shape
    grid, count = projection.sampling_grid(points, batch, image_size, (w, h), grid_dtype=heat.dtype)
    sampled = F.grid_sample(heat.reshape(B * V, C, h, w), grid, align_corners=True).view(B, V, C, -1)
    return (sampled.sum(1) / count.clamp(min=1)).clamp(0, 1)


def test_bag_sampling_values_and_gradient_match_grid_sample(monkeypatch: pytest.MonkeyPatch) -> None:
    # the embedding-bag sampler (cubes / uncached points) == grid_sample on the same grids, in value and in
    # gradient w.r.t. the heatmaps (float64), also with several blocks and with the int64 index packing
    B, V, C, h, w = 2, 3, 2, 8, 12
    monkeypatch.setattr(projection, "CHUNK_POINTS", 40)
    rng = np.random.default_rng(5)
    affines = np.stack([[resize_affine(RES, (192, 128), rng.uniform(-30, 30), rng.uniform(0.9, 1.1))
                         for _ in range(V)] for _ in range(B)])  # rotated affines: non-diagonal transforms
    batch = make_batch([ring_cameras(V, seed=30 + b) for b in range(B)], affines)
    roots = torch.tensor([[[0.0, -300.0, 900.0], [4000.0, 0.0, 4000.0]], [[-900.0, 600.0, 800.0], [-2500.0, 2500.0, 0.0]]])
    size, voxels = (1800.0, 1500.0, 1200.0), (5, 4, 3)
    points = cube_points(roots.double(), grid_points((0, 0, 0), size, voxels, dtype=torch.float64))
    layer = ProjectionLayer((192, 128), (w, h))
    heat = (torch.rand(B, V, C, h, w, dtype=torch.float64, generator=torch.Generator().manual_seed(2)) * 0.9)
    heat.requires_grad_(True)
    probe = torch.randn(B, C, points.shape[1], dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    ref = grid_sample_volume(heat, batch, points, (192, 128))
    (ref_grad,) = torch.autograd.grad((ref * probe).sum(), heat)
    count = projection.sampling_grid(points, batch, (192, 128), (w, h))[1]
    assert float((count == V).double().mean()) < 0.9 and float((count > 0).double().mean()) > 0.3  # partly in view
    for exact_rows in (sampling.EXACT_ROWS, 0):  # 0: pack the tap rows in int64 instead of float64
        monkeypatch.setattr(sampling, "EXACT_ROWS", exact_rows)
        for volume in (layer.cubes(heat, batch, roots, size, voxels), layer(heat, batch, points)):
            (grad,) = torch.autograd.grad((volume * probe).sum(), heat)
            assert float((volume.detach() - ref.detach()).abs().max()) <= 1e-12
            assert float((grad - ref_grad).abs().max()) <= 1e-12
            with torch.no_grad():
                assert float((layer.cubes(heat, batch, roots, size, voxels) - ref).abs().max()) <= 1e-12
    small = heat[:1, :, :1].detach().clone().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda hm: layer.cubes(hm, {k: v[:1] for k, v in batch.items()}, roots[:1], size,
                                                           voxels), (small,))
