"""One trainer for every method, on Hugging Face Accelerate."""

from .schedule import GanSchedule
from .trainer import EpochSampler, LRSchedule, Trainer, run_training

__all__ = ["EpochSampler", "GanSchedule", "LRSchedule", "Trainer", "run_training"]
