"""``safealign models``: fetch built-in models ahead of time and list them."""

from __future__ import annotations

SUBCOMMANDS = {
    "fetch": ("safealign.cli.models_fetch", "download and convert a built-in model into the cache; print its path"),
    "list": ("safealign.cli.models_list", "list built-in model names and whether each is cached"),
}
