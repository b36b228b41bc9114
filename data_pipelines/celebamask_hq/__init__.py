"""CelebAMask-HQ (faces, face-part segmentation, 40 attributes) as the tfds dataset `celebamask_hq`, built from the
user's download. Build: `python -m data_pipelines.celebamask_hq --data_dir=DIR --manual_dir=DIR [--config=parts19]`."""
from data_pipelines.celebamask_hq.builder import (ATTRIBUTE_NAMES, CLASS_NAMES, MANUAL_DOWNLOAD_INSTRUCTIONS, PARTS,
                                                  SKIN_PARTS, CelebAMaskHQ, CelebAMaskHQConfig, build)
