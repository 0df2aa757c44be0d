"""safealign: align language models so they stay safe under jailbreak attacks, and measure it."""

__version__ = "0.1.0"
