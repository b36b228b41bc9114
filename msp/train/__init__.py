"""Training: the meta-train state, the jitted meta-step, building both from a config, and checkpoints."""
from msp.train.checkpoint import CheckpointError, RunCheckpointer
from msp.train.config import ConfigError, validate_config
from msp.train.setup import MetaLearner, build_meta_learner
from msp.train.state import MetaTrainState
from msp.train.step import make_meta_train_step

__all__ = ["CheckpointError", "ConfigError", "MetaLearner", "MetaTrainState", "RunCheckpointer", "build_meta_learner",
           "make_meta_train_step", "validate_config"]
