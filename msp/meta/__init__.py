"""Meta-learning of λ and of the shared initialisation: episodes, inner loop, meta-objective and its gradient."""
from msp.meta.episodes import MetaBatch, sample_task_masks
from msp.meta.inner_loop import adapt
from msp.meta.lambdas import LAMBDA_MODES, init_rho, lambdas_from_log
from msp.meta.meta_gradient import EPISODE_LOOPS, META_GRADIENT_MODES, MetaGradientMode, MetaObjective, sum_over_episodes
from msp.meta.objective import MultiTaskLoss

__all__ = ["EPISODE_LOOPS", "LAMBDA_MODES", "META_GRADIENT_MODES", "MetaBatch", "MetaGradientMode", "MetaObjective",
           "MultiTaskLoss", "adapt", "init_rho", "lambdas_from_log", "sample_task_masks", "sum_over_episodes"]
