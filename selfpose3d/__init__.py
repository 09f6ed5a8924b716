"""SelfPose3d model library."""
