"""``safealign rm ...``: reward and cost models (docs/online.md)."""

SUBCOMMANDS = {
    "score": ("safealign.cli.rm_score", "score (prompt, response) rows with a trained reward or cost model"),
}
