"""One trainer for every method, on Hugging Face Accelerate."""

from .trainer import EpochSampler, LRSchedule, Trainer, run_training

__all__ = ["EpochSampler", "LRSchedule", "Trainer", "run_training"]
