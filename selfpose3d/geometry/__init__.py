"""Geometry: cameras, projection with distortion, image affine transforms."""
