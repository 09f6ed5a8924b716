"""Synthetic multi-view world written in the real CMU Panoptic on-disk layout.

`generate_dataset(cfg, out_dir, progress)` writes cameras, images, GT 3D poses and simulated 2D
detector pseudo labels for ``cfg.synth``; `summarize_dataset(root)` reads any Panoptic-layout root back.
"""

from selfpose3d.data.synthetic.summary import DatasetFormatError, summarize_dataset
from selfpose3d.data.synthetic.world import HD_NODES
from selfpose3d.data.synthetic.writer import (
           MANIFEST,
           DatasetExistsError,
           SyntheticConfigError,
           generate_dataset,
)

__all__ = ["HD_NODES", "MANIFEST", "DatasetExistsError", "DatasetFormatError", "SyntheticConfigError",
           "generate_dataset", "summarize_dataset"]
