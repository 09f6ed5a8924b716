"""Data: joint definitions, synthetic Panoptic-format world, dataset readers, pseudo labels, augmentation."""
