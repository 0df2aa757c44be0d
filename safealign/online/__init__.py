"""Online training: reward and cost models, RLOO/GRPO with the E-RLHF reference view, Safe RLHF, online IPO.

A layer above ``eval`` (judges are reward sources) and below ``pipelines``; docs/online.md.
"""
