"""Attacks: the Attack base and result, the registry, the torchattacks adapter and the dataset runner."""

from advkit.attacks.base import ATTACKS, Attack, AttackResult, RawResult, attack_names, create_attack, perturbation_norms

__all__ = ["ATTACKS", "Attack", "AttackResult", "RawResult", "attack_names", "create_attack", "perturbation_norms"]
