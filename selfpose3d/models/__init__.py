"""Networks: PoseResNet 2D nets, V2V, heatmap->voxel projection, root_net, pose_net, the full model."""

from selfpose3d.models.model import ModelConfigError, SelfPose3dModel
from selfpose3d.models.pose_net import PoseNet, soft_argmax
from selfpose3d.models.pose_resnet import PoseResNet, PretrainedWeightsError
from selfpose3d.models.projection import ProjectionError, ProjectionLayer, cube_points, grid_points
from selfpose3d.models.proposals import get_proposals, index_to_mm, nms_volume, topk_peaks
from selfpose3d.models.root_net import RootNet
from selfpose3d.models.v2v import V2VNet

__all__ = [
    "ModelConfigError", "PoseNet", "PoseResNet", "PretrainedWeightsError", "ProjectionError", "ProjectionLayer",
    "RootNet", "SelfPose3dModel", "V2VNet", "cube_points", "get_proposals", "grid_points", "index_to_mm",
    "nms_volume", "soft_argmax", "topk_peaks",
]
