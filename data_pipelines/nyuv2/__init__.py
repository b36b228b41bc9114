"""NYU Depth v2 for multi-task learning (segmentation, depth, normals, edges) as the tfds dataset `nyuv2`, built
from a manual download: `python -m data_pipelines.nyuv2 --data_dir=DIR --manual_dir=DIR --config=nyud_mt`."""
from data_pipelines.nyuv2.builder import LAYOUTS, NyuV2, NyuV2Config, build
