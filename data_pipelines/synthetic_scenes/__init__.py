"""Synthetic indoor scenes rendered with numpy, with exact multi-task ground truth, as the tfds dataset
`synthetic_scenes`. Build: `python -m data_pipelines.synthetic_scenes --data_dir=DIR [--config=res64]`."""
from data_pipelines.synthetic_scenes.builder import SyntheticScenes, SyntheticScenesConfig, build
from data_pipelines.synthetic_scenes.render import (ATTRIBUTE_NAMES, CLASS_NAMES, SceneDescription, intrinsics,
                                                    render_scene)
