"""Defences: adversarial fine-tuning (the RGB/IR paper's protocol, PGD-AT, fast AT, TRADES) and their evaluation."""

from advkit.defenses.finetune import METHODS, FinetuneMethod, FinetuneObjective, default_optimisation

__all__ = ["METHODS", "FinetuneMethod", "FinetuneObjective", "default_optimisation"]
