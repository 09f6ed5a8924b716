"""SelfPose3d Lab experiment platform."""
