"""Attacks: ``attack(behavior) -> list[Attempt]``; one file each, registered in ``eval.registries``."""

from safealign.eval.attacks.base import Attack, AttackContext, build_attack

__all__ = ["Attack", "AttackContext", "build_attack"]
