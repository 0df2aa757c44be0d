"""``safealign train CONFIG.yaml [key=value ...] [--resume]``.

The recipe's ``trainer`` key (or a ``trainer=`` override) picks the schema: absent (or ``preference``) is the
offline preference trainer, ``online`` the online RLOO/GRPO/IPO trainer, ``reward`` a reward or cost model
(docs/online.md).
"""

from __future__ import annotations

import argparse
from collections.abc import Iterable
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="YAML recipe (see configs/train/)")
    parser.add_argument(  # default: so a missing recipe's error does not call the optional overrides required
        "overrides", nargs="*", default=[], help="dotlist overrides, e.g. learning_rate=1e-4 losses.0.params.beta=0.5"
    )
    parser.add_argument("--resume", action="store_true",
                        help="continue from the last checkpoint in output_dir (preference and online recipes; "
                        "reward-model training keeps no checkpoints)")
    parser.add_argument("--overwrite", action="store_true",
                        help="delete the outputs of an earlier run in output_dir (checkpoints, metrics, final/) first")


def trainer_kind(path: str, overrides: Iterable[str] = ()) -> str:
    """The ``trainer`` the recipe's layers set, or the last ``trainer=`` override (text as written, as a text field
    takes it): the override also reaches the schema, so picking the schema from the files alone loaded the
    preference schema for ``trainer=online``, which then refused it."""
    from safealign.config import COMMAND_LINE, read_recipe
    from safealign.errors import UserError

    kind, where = "preference", path
    for layer in read_recipe(Path(path)):
        kind = layer.get("trainer", kind)
    for override in overrides:
        key, sep, value = override.partition("=")
        if sep and key == "trainer":
            quoted = len(value) >= 2 and value[0] == value[-1] and value[0] in "'\""
            kind, where = value[1:-1] if quoted else value, COMMAND_LINE
    if kind not in ("preference", "online", "reward"):
        raise UserError(f"{where}: trainer must be preference, online or reward, got {kind!r}")
    return kind


def run(args: argparse.Namespace) -> int:
    from safealign.config import load_config
    from safealign.errors import UserError

    kind = trainer_kind(args.config, args.overrides)
    if kind == "reward" and args.resume:  # its loop saves no checkpoint: --resume trained from scratch on a new folder
        raise UserError("--resume: reward-model training (trainer: reward) keeps no checkpoints, so it cannot continue "
                        "a run; run without --resume (an unfinished run in output_dir is refused, and --overwrite "
                        "trains it again from the start)")
    if kind == "reward":
        from safealign.online.reward_train import RewardConfig, run_reward_training

        result = run_reward_training(load_config(RewardConfig, args.config, args.overrides), overwrite=args.overwrite)
    elif kind == "online":
        from safealign.online.config import OnlineConfig
        from safealign.online.run import run_online

        result = run_online(load_config(OnlineConfig, args.config, args.overrides), resume=args.resume,
                            overwrite=args.overwrite)
    else:
        from safealign.train.config import TrainConfig
        from safealign.train.run import run_training

        config = load_config(TrainConfig, args.config, args.overrides)
        result = run_training(config, resume=args.resume, overwrite=args.overwrite)
    print(f"trained {result.steps} steps in {result.wall_seconds:.0f} s; reference: {result.reference}")
    print(f"final model: {result.final_dir}\nmetrics: {result.metrics_path}")
    return 0
