"""``safealign judge``: check a judge against human labels; judge an evaluation's recorded answers again."""

SUBCOMMANDS = {
    "validate": (
        "safealign.cli.judge_validate",
        "agreement, kappa, FPR, FNR of a judge against human-labelled completions (HarmBench, JailbreakBench, JSONL)",
    ),
    "records": (
        "safealign.cli.judge_records",
        "judge an evaluation's recorded answers with another judge, generating nothing (RUN/judged/<label>/)",
    ),
}
