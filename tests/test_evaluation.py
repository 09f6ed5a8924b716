"""Evaluation protocol (VoxelPose / SelfPose3d) against hand-computed cases."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from selfpose3d.evaluation import (
    EvaluationError,
    FrameResult,
    evaluate_pcp,
    evaluate_poses,
    flat_metrics,
    format_table,
    frames_from_outputs,
    panoptic_to_shelf,
    per_sequence_table,
    pose_errors,
    save_report,
)

THRESHOLDS = (25, 50, 75, 100, 125, 150)


def skeleton(offset_x: float = 0.0, seed: int = 0) -> np.ndarray:
    """A fixed non-degenerate Panoptic-15 pose (15, 3) in mm, translated along x."""
    rng = np.random.default_rng(seed)
    pose = rng.normal(0.0, 300.0, size=(15, 3)) + np.array([0.0, 0.0, 1000.0])
    pose[:, 0] += offset_x
    return pose


def shifted(pose: np.ndarray, dx: float) -> np.ndarray:
    """Every joint moved dx mm along x: MPJPE to `pose` is exactly |dx|."""
    return pose + np.array([dx, 0.0, 0.0])


def frame(preds: list[np.ndarray], scores: list[float], gts: list[np.ndarray], **kw) -> FrameResult:
    return FrameResult(pred_poses=np.array(preds).reshape(-1, 15, 3), pred_scores=scores,
                       gt_poses=np.array(gts).reshape(-1, 15, 3), **kw)


G1, G2, G3 = skeleton(0.0), skeleton(3000.0, seed=1), skeleton(-3000.0, seed=2)


def test_perfect_predictions() -> None:
    frames = [frame([G1, G2], [0.9, 0.8], [G1, G2], sequence="a"),
              frame([G3], [0.7], [G3], sequence="b")]
    m = evaluate_poses(frames)
    for t in THRESHOLDS:
        assert m[f"ap{t}"] == pytest.approx(1.0)
        assert m[f"recall{t}"] == pytest.approx(1.0)
    assert m["mpjpe"] == pytest.approx(0.0)
    assert m["recall500"] == pytest.approx(1.0)
    assert (m["num_gt"], m["num_pred"], m["num_frames"]) == (3.0, 3.0, 2.0)


def test_duplicate_prediction_is_false_positive() -> None:
    # sorted: TP(g1) FP(dup g1) TP(g2); recall .5 .5 1, precision 1 .5 2/3 -> monotone 1 2/3 2/3
    # AP = .5 * 1 + .5 * 2/3 = 5/6; recall stays 1
    frames = [frame([G1, G1, G2], [0.9, 0.8, 0.7], [G1, G2])]
    m = evaluate_poses(frames)
    assert m["ap25"] == pytest.approx(5 / 6)
    assert m["recall25"] == pytest.approx(1.0)
    assert m["mpjpe"] == pytest.approx(0.0)


def test_precision_envelope() -> None:
    # TP FP TP TP over 3 GT: precision 1, 1/2, 2/3, 3/4 -> monotone 1, 3/4, 3/4, 3/4
    # AP = 1/3 * (1 + 3/4 + 3/4) = 5/6 (the raw precision would give 1/3 * (1 + 2/3 + 3/4))
    frames = [frame([G1, shifted(G1, 1000.0), G2, G3], [0.9, 0.8, 0.7, 0.6], [G1, G2, G3])]
    assert evaluate_poses(frames)["ap150"] == pytest.approx(5 / 6)


def test_missed_gt_lowers_recall_and_ap() -> None:
    # 3 GT, 2 exact predictions: recall 2/3, precision 1 -> AP = 2/3
    frames = [frame([G1], [0.9], [G1]), frame([G2], [0.5], [G2, G3])]
    m = evaluate_poses(frames)
    assert m["ap50"] == pytest.approx(2 / 3)
    assert m["recall50"] == pytest.approx(2 / 3)
    assert m["recall500"] == pytest.approx(2 / 3)


def test_false_positive_with_higher_score() -> None:
    # FP (300 mm off, score .9) before TP (score .5): precision 0, 1/2 -> monotone 1/2, 1/2; AP = 1 * 1/2
    frames = [frame([shifted(G1, 300.0), G1], [0.9, 0.5], [G1])]
    m = evaluate_poses(frames)
    for t in THRESHOLDS:
        assert m[f"ap{t}"] == pytest.approx(0.5)
        assert m[f"recall{t}"] == pytest.approx(1.0)
    # at 500 mm the higher-scored 300 mm prediction claims the GT first (VoxelPose MPJPE semantics)
    assert m["mpjpe"] == pytest.approx(300.0)


def test_invisible_joints_are_excluded() -> None:
    pred = G1.copy()
    pred[5, 2] += 1000.0  # l-wrist 1 m off
    vis = np.ones((1, 15), bool)
    vis[0, 5] = False
    hidden = evaluate_poses([frame([pred], [1.0], [G1], gt_vis=vis)])
    shown = evaluate_poses([frame([pred], [1.0], [G1])])
    assert hidden["mpjpe"] == pytest.approx(0.0)
    assert hidden["ap25"] == pytest.approx(1.0)
    assert shown["mpjpe"] == pytest.approx(1000.0 / 15)
    assert shown["ap50"] == pytest.approx(0.0)
    assert shown["ap75"] == pytest.approx(1.0)
    assert pose_errors(shifted(G1, 30.0)[None], G1[None], vis)[0, 0] == pytest.approx(30.0)


def test_threshold_boundary() -> None:
    m = evaluate_poses([frame([shifted(G1, 40.0)], [1.0], [G1])])
    assert m["ap25"] == 0.0 and m["recall25"] == 0.0
    assert m["ap50"] == pytest.approx(1.0) and m["recall50"] == pytest.approx(1.0)
    assert m["mpjpe"] == pytest.approx(40.0)


def test_frames_without_gt_and_invalid_predictions_are_ignored() -> None:
    base = evaluate_poses([frame([G1], [0.5], [G1])])
    extra = [frame([G1], [0.5], [G1]), frame([G2], [0.99], []),
             frame([G1, shifted(G1, 400.0)], [0.5, 0.9], [G1], pred_valid=[True, False])]
    m = evaluate_poses(extra)
    assert m["ap25"] == pytest.approx(base["ap25"]) == pytest.approx(1.0)
    assert m["num_frames"] == 2.0 and m["num_pred"] == 2.0


def test_no_gt_raises_and_bad_shapes_raise() -> None:
    with pytest.raises(EvaluationError, match="no ground-truth"):
        evaluate_poses([frame([G1], [0.5], [])])
    with pytest.raises(EvaluationError, match="pred_scores"):
        frame([G1], [0.5, 0.4], [G1])
    with pytest.raises(EvaluationError, match="gt_vis"):
        frame([G1], [0.5], [G1], gt_vis=np.ones((1, 14), bool))


def test_root_metrics() -> None:
    # g2's root is invisible: the exact proposal on it (score .9) matches g1 at ~3 m -> FP; the 30 mm
    # proposal on g1 (score .5) is a TP from 50 mm on: AP = (1/2 recall) * (1/2 precision) = 0.25
    vis = np.ones((2, 15), bool)
    vis[1, 2] = False
    roots = np.stack([G1[2] + [30.0, 0.0, 0.0], G2[2]])
    m = evaluate_poses([frame([G1, G2], [0.5, 0.9], [G1, G2], gt_vis=vis, root_preds=roots,
                              root_scores=[0.5, 0.9])])
    assert m["root_ap25"] == 0.0
    assert m["root_ap50"] == pytest.approx(0.25)
    assert m["root_recall50"] == pytest.approx(0.5)
    assert m["root_mpjpe"] == pytest.approx(30.0)
    assert m["root_recall500"] == pytest.approx(0.5)


def _reference_ap(frames: list[FrameResult], t: float) -> tuple[float, float, float]:
    """Plain-loop re-statement of the protocol: (AP, recall, MPJPE over first matches < t)."""
    items, total = [], 0
    for f in frames:
        for k in range(len(f.pred_poses)):
            if len(f.gt_poses) == 0:
                continue
            errs = [np.linalg.norm(f.pred_poses[k][v] - g[v], axis=-1).mean()
                    for g, v in zip(f.gt_poses, f.gt_vis, strict=True)]
            items.append((f.pred_scores[k], min(errs), total + int(np.argmin(errs))))
        total += len(f.gt_poses)
    items = sorted(items, key=lambda x: x[0], reverse=True)
    claimed, tp, hit_err = set(), [], []
    for _, err, gid in items:
        ok = err < t and gid not in claimed
        tp.append(ok)
        if ok:
            claimed.add(gid)
            hit_err.append(err)
    ctp = np.cumsum(tp)
    rec, prec = list(ctp / total), list(ctp / np.arange(1, len(tp) + 1))
    for n in range(len(prec) - 2, -1, -1):
        prec[n] = max(prec[n], prec[n + 1])
    rec, prec = [0.0] + rec + [1.0], [0.0] + prec + [0.0]
    ap = sum((rec[i + 1] - rec[i]) * prec[i + 1] for i in range(len(rec) - 1) if rec[i + 1] != rec[i])
    return ap, rec[-2], float(np.mean(hit_err)) if hit_err else float("inf")


def test_matches_loop_reference_on_random_scenes() -> None:
    rng = np.random.default_rng(42)
    frames = []
    for i in range(40):
        gts = [skeleton(3000.0 * j, seed=int(rng.integers(1000))) for j in range(int(rng.integers(0, 4)))]
        preds = [g + rng.normal(0, rng.choice([10, 40, 120, 700]), size=(15, 3)) for g in gts
                 for _ in range(int(rng.integers(0, 3)))]
        vis = rng.random((len(gts), 15)) > 0.2
        vis[:, 2] = True
        frames.append(frame(preds, list(rng.random(len(preds))), gts, gt_vis=vis, sequence=f"s{i % 2}"))
    m = evaluate_poses(frames)
    assert 0.0 < m["ap50"] < 1.0
    for t in THRESHOLDS:
        ap, rec, _ = _reference_ap(frames, t)
        assert m[f"ap{t}"] == pytest.approx(ap, abs=1e-12)
        assert m[f"recall{t}"] == pytest.approx(rec, abs=1e-12)
    _, rec500, mpjpe500 = _reference_ap(frames, 500)
    assert m["mpjpe"] == pytest.approx(mpjpe500) and m["recall500"] == pytest.approx(rec500)


def test_per_sequence_table_pools_all_row(tmp_path) -> None:
    frames = [frame([G1], [0.9], [G1], sequence="seqA"),
              frame([shifted(G2, 1000.0), G2], [0.8, 0.7], [G2], sequence="seqB")]
    table = per_sequence_table(frames)
    assert list(table) == ["seqA", "seqB", "All"]
    assert table["seqA"]["ap25"] == pytest.approx(1.0)
    assert table["seqB"]["ap25"] == pytest.approx(0.5)
    # pooled: TP(.9) FP(.8) TP(.7) over 2 GT -> 5/6, not the row mean 0.75
    assert table["All"]["ap25"] == pytest.approx(5 / 6)
    text = format_table(table)
    assert "| seqB |" in text and "83.33" in text and "mpjpe" in text
    flat = flat_metrics(table)
    assert flat["eval/ap25"] == pytest.approx(5 / 6)
    assert flat["eval/seqB/ap25"] == pytest.approx(0.5)
    assert all(re.fullmatch(r"[/\w.\- :]*", k) for k in flat)  # MLflow's allowed metric-name charset
    out = save_report(table, tmp_path / "sub" / "report.json")
    assert json.loads(out.read_text())["seqA"]["ap50"] == pytest.approx(1.0)
    assert not [p for p in out.parent.iterdir() if p.name.endswith(".tmp")]


def test_frames_from_outputs() -> None:
    proposals = np.zeros((1, 3, 5))
    proposals[0, :, :3] = [G1[2], G2[2], [0.0, 0.0, 0.0]]
    proposals[0, :, 3] = [0.9, 0.8, 0.1]
    proposals[0, :, 4] = [1, 1, 0]
    poses = np.stack([G1, G2, G3])[None]
    gt = np.zeros((1, 4, 15, 3))
    gt[0, :2] = [G1, G2]
    batch = {"gt_3d": gt, "gt_vis": np.ones((1, 4, 15), bool), "gt_count": np.array([2]),
             "meta": [{"sequence": "s", "frame": 12}]}
    frames = frames_from_outputs({"proposals": proposals, "poses": poses}, batch)
    assert len(frames) == 1 and frames[0].sequence == "s" and len(frames[0].gt_poses) == 2
    m = evaluate_poses(frames)
    assert m["ap25"] == pytest.approx(1.0) and m["num_pred"] == 2.0
    assert m["root_ap25"] == pytest.approx(1.0) and m["root_mpjpe"] == pytest.approx(0.0)


# ---------------------------------------------------------------- PCP (Shelf / Campus)

def shelf_actor(x: float) -> np.ndarray:
    """A Shelf-14 GT actor (14, 3) mm; l-elbow -> l-wrist (joints 10 -> 11) is 200 mm along x."""
    pose = np.round(panoptic_to_shelf(skeleton(x, seed=int(x) % 97 + 3)))
    pose[11] = pose[10] + [200.0, 0.0, 0.0]
    return pose


def test_panoptic_to_shelf_mapping() -> None:
    pan = skeleton(0.0)
    shelf = panoptic_to_shelf(pan)
    assert shelf.shape == (14, 3)
    np.testing.assert_allclose(shelf[0], pan[14])  # r-ankle
    np.testing.assert_allclose(shelf[3], pan[6])  # l-hip
    np.testing.assert_allclose(shelf[8], pan[9])  # r-shoulder
    np.testing.assert_allclose(shelf[11], pan[5])  # l-wrist
    mid = (pan[3] + pan[9]) / 2  # SelfPose3d's head rule from the shoulder midpoint and the nose
    np.testing.assert_allclose(shelf[12], (mid + pan[1]) / 2)
    np.testing.assert_allclose(shelf[13], mid + [0.9375, 0.9375, 1.5] * (pan[1] - mid))
    with pytest.raises(EvaluationError):
        panoptic_to_shelf(np.zeros((14, 3)))


def test_pcp_one_bad_limb() -> None:
    gts = np.stack([shelf_actor(0.0), shelf_actor(3000.0), shelf_actor(-3000.0), shelf_actor(6000.0)])
    preds = gts.copy()
    preds[0, 11] += [0.0, 600.0, 0.0]  # actor 1 wrist: mean endpoint error 300 > 0.5 * 200 -> wrong
    preds[1, 11] += [0.0, 200.0, 0.0]  # actor 2 wrist: mean error 100 == 0.5 * 200 -> still correct
    preds[3] += [0.0, 0.0, 5000.0]  # actor 4 far off: reported, not averaged
    r = evaluate_pcp([preds[::-1]], [gts])  # prediction order must not matter
    assert r["actor1"] == pytest.approx(0.9)
    assert r["actor2"] == pytest.approx(1.0) and r["actor3"] == pytest.approx(1.0)
    assert r["actor4"] == pytest.approx(0.0)
    assert r["average"] == pytest.approx((0.9 + 1.0 + 1.0) / 3)
    assert r["lower_arms"] == pytest.approx((0.5 + 1.0 + 1.0) / 3)
    assert r["head"] == pytest.approx(1.0)
    assert r["recall500"] == pytest.approx(0.75)


def test_pcp_panoptic_predictions_absent_actor_and_empty_frame() -> None:
    pan = np.stack([skeleton(0.0), skeleton(3000.0, seed=1), skeleton(-3000.0, seed=2)])
    gts = panoptic_to_shelf(pan)
    # frame 1: all actors, Panoptic-15 predictions; frame 2: actor 3 absent (NaN), no valid prediction
    gts2 = gts.copy()
    gts2[2] = np.nan
    r = evaluate_pcp([pan, pan], [gts, gts2], pred_valid=[np.ones(3, bool), np.zeros(3, bool)])
    assert r["actor1"] == pytest.approx(0.5) and r["actor2"] == pytest.approx(0.5)
    assert r["actor3"] == pytest.approx(1.0)
    assert r["recall500"] == pytest.approx(3 / 5)
    with pytest.raises(EvaluationError, match="frames"):
        evaluate_pcp([pan], [gts, gts])
