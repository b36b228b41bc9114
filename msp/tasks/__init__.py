"""Tasks: the registry of task kinds (head, loss, metric), the losses and the streaming metrics."""
from msp.tasks.metrics import (AttributeMetric, DepthMetric, EdgeMetric, Metric, NormalsMetric, RegressionMetric,
                               SegmentationMetric)
from msp.tasks.registry import TASK_KINDS, Task, TaskKind, build_task, build_tasks

__all__ = ["AttributeMetric", "DepthMetric", "EdgeMetric", "Metric", "NormalsMetric", "RegressionMetric",
           "SegmentationMetric", "TASK_KINDS", "Task", "TaskKind", "build_task", "build_tasks"]
