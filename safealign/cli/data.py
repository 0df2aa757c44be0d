"""``safealign data``: inspect and build data sets."""

SUBCOMMANDS = {
    "inspect": (
        "safealign.cli.data_inspect",
        "parse a data file or dataset id and report format, counts, drops and examples",
    ),
    "build-safety": (
        "safealign.cli.data_build_safety",
        "generate safety preference pairs from the built-in prompts with a model's own answers",
    ),
    "score": (
        "safealign.cli.data_score",
        "add aligned models' scores of each chosen response (the chosen_scores column poft trains on)",
    ),
    "import-completions": (
        "safealign.cli.data_import_completions",
        "HarmBench completions (and labels) as an evaluation directory, for safealign's judges",
    ),
    "export-completions": (
        "safealign.cli.data_export_completions",
        "an evaluation's answers in HarmBench's completions layout, for its evaluate_completions.py",
    ),
    "select": (
        "safealign.cli.data_select",
        "keep the pairs whose two responses differ most (REAL), writing a filtered file",
    ),
}
