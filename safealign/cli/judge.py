"""``safealign judge``: check a judge against human labels."""

SUBCOMMANDS = {
    "validate": (
        "safealign.cli.judge_validate",
        "agreement, kappa, FPR, FNR of a judge against human-labelled completions (HarmBench, JailbreakBench, JSONL)",
    ),
}
