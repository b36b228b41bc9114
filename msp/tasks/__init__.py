"""Tasks: the registry of task kinds (head, loss) and the losses themselves."""
from msp.tasks.registry import TASK_KINDS, Task, build_task, build_tasks

__all__ = ["TASK_KINDS", "Task", "build_task", "build_tasks"]
