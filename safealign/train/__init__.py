"""Preference training: log-probs (logps), reference log-probs, the trainer."""
