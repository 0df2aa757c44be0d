"""``safealign defenses CONFIG``: the bare model and each inference-time defense, evaluated alike.

Every method (a named stack of defenses; ``base`` has none) answers the same held-out harmful prompts
under the same attacks and judges, and the same benign and borderline prompts; one model load serves
them all. Per method the run writes a normal evaluation under ``eval/<method>/``, and at the top a
``summary.json`` with direct and template ASR, over-refusal, the cost per answer and its multiple of the
bare model's cost measured in the same run, then ``report.html`` (table and ASR vs over-refusal scatter).
Resumable like every evaluation (docs/defenses.md): the directory is claimed (safealign.io.rundir) before
anything is written, so a re-run with other settings is refused and leaves the earlier run's ``config.yaml``
as it was; ``--fresh`` deletes the earlier outputs instead.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from safealign import checks
from safealign.config import load_config, save_config, to_dict
from safealign.errors import UserError
from safealign.eval.config import (
    BEHAVIOR_SELECTION, BENIGN_SELECTION, BehaviorsConfig, BenignConfig, DefenseConfig, EvalConfig,
)
from safealign.io import write_json
from safealign.io.rundir import EVAL_EXCLUDED, Fingerprint, claim_run_dir, legacy_fingerprint, make_fingerprint

logger = logging.getLogger(__name__)

BUILTIN_COUNTS = ("harmful_test", "benign_test", "borderline_test")  # the built-in prompts read with prompts: builtin
FRESH = "--fresh"  # the command's option that deletes an earlier run's outputs (safealign/cli/defenses.py)
OUTPUTS = ("config.yaml", "summary.json", "report.html", "report.md", "eval")  # what FRESH removes


@dataclass
class MethodConfig:
    name: str = "base"
    defenses: list[DefenseConfig] = field(default_factory=list)  # outermost first; empty: the bare model


def _default_eval() -> EvalConfig:
    config = EvalConfig(attacks=["direct", "template"], judges=["refusal"],
                        attack_params={"template": {"names": ["refusal_suppression", "roleplay_novelist"]}})
    config.generation.max_new_tokens = 48
    return config


@dataclass
class DefenseCompareConfig:
    eval: EvalConfig = field(default_factory=_default_eval)  # model, attacks, judges, generation for every method
    # builtin: the demo's held-out prompts (the counts below) | config: eval.behaviors and eval.benign; the settings
    # of the other are refused (_check_unread)
    prompts: str = "builtin"
    harmful_test: int = 40  # builtin held-out harmful prompts (stratified by category, as the demo)
    benign_test: int = 24
    borderline_test: int = 24
    methods: list[MethodConfig] = field(default_factory=lambda: [MethodConfig("base")])
    output_dir: str = "runs/defenses"

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        names = [m.name for m in self.methods]
        if not names or len(set(names)) != len(names) or not all(names):
            raise UserError(f"methods: names must be distinct and non-empty, got {names}")
        if self.prompts not in ("builtin", "config"):
            raise UserError(f"prompts must be 'builtin' or 'config', got {self.prompts!r}")
        self._check_unread()

    def _check_unread(self) -> None:
        """What no method's evaluation reads is refused when set: each is given its own defenses and folder, and
        with ``prompts: builtin`` the built-in prompts; with ``prompts: config`` the built-in counts go unused."""
        checks.unread("eval.", self.eval, checks.field_defaults(EvalConfig, ("defenses",)),
                      "each method's evaluation is given the defenses of its entry in methods, replacing "
                      "eval.defenses; give a stack as methods: [{name: NAME, defenses: [...]}]")
        checks.unread("eval.", self.eval, checks.field_defaults(EvalConfig, ("output_dir",)),
                      "each method's evaluation writes to output_dir/eval/<method>: set output_dir instead")
        if self.prompts == "config":
            checks.unread("", self, checks.field_defaults(DefenseCompareConfig, BUILTIN_COUNTS),
                          "prompts: config evaluates eval.behaviors and eval.benign (their filters choose the "
                          "prompts, e.g. eval.behaviors.limit, eval.benign.limit), not the built-in held-out sets")
            return
        why = ("with prompts: builtin every method answers the demo's built-in held-out prompts (harmful_test harmful, "
               "benign_test benign, borderline_test borderline), never {key}; use those counts, or prompts: config "
               "to evaluate eval.behaviors and eval.benign")
        behaviors = checks.field_defaults(BehaviorsConfig, BEHAVIOR_SELECTION)
        checks.unread("eval.behaviors.", self.eval.behaviors, behaviors,
                      why.format(key="eval.behaviors' file or selection"))
        benign = checks.field_defaults(BenignConfig, BENIGN_SELECTION)
        checks.unread("eval.benign.", self.eval.benign, benign, why.format(key="eval.benign"))


def builtin_prompts(config: DefenseCompareConfig) -> tuple[list[Any], Any]:
    """The demo's held-out harmful behaviors and benign/borderline prompts (never the training split)."""
    from safealign.data.builtin import harmful_behaviors, load_prompts
    from safealign.eval.benign import BenignSet
    from safealign.eval.helpfulness.overrefusal import HelpfulnessPrompt
    from safealign.pipelines.demo import stratified

    behaviors = harmful_behaviors(stratified(load_prompts("harmful", split="test"), config.harmful_test))
    benign = [p for kind, n in (("ordinary", config.benign_test), ("borderline", config.borderline_test))
              for p in stratified(load_prompts("benign", split="test", kind=kind), n)]  # fmt: skip
    return behaviors, BenignSet(tuple(HelpfulnessPrompt(p.id, p.prompt, p.kind) for p in benign))


def run_defense_comparison(config: DefenseCompareConfig, *, fresh: bool = False) -> dict[str, Any]:
    """Evaluate every method (resuming; ``fresh``: deleting an earlier run's outputs first) and write the
    comparison summary and report; returns the summary."""
    from safealign.eval.defenses.base import check_defenses
    from safealign.eval.pipeline import run_eval
    from safealign.report import build_report

    config.validate()
    for method in config.methods:  # every stack is built and checked before the model loads
        check_defenses(method.defenses, config.eval.model.backend)
    out = Path(config.output_dir)
    _claim(config, out, fresh)
    save_config(config, out / "config.yaml")
    behaviors, benign = builtin_prompts(config) if config.prompts == "builtin" else (None, None)
    model, tokenizer = _load_once(config.eval)
    started = time.perf_counter()
    results = {}
    for method in config.methods:
        evaluation = dataclasses.replace(config.eval, defenses=list(method.defenses),
                                         output_dir=str(out / "eval" / method.name))  # fmt: skip
        logger.info("defenses: evaluating %s (%s)", method.name, [d.name for d in method.defenses] or "bare model")
        results[method.name] = run_eval(evaluation, model, tokenizer, behaviors=behaviors, benign=benign,
                                         overwrite_flag=FRESH)  # fmt: skip
    summary = comparison_summary(config, results, round(time.perf_counter() - started, 1))
    write_json(out / "summary.json", summary)
    build_report(out)
    return summary


def comparison_fingerprint(settings: dict[str, Any]) -> Fingerprint:
    """The comparison's settings less where it writes and what an evaluation's own fingerprint leaves out
    (safealign.io.rundir.EVAL_EXCLUDED); ``methods`` may grow, as each method resumes in its own ``eval/<name>/``
    (whose claim also checks what this cannot see: the weights, a behaviors file's content)."""
    exclude = ("output_dir", *(f"eval.{key}" for key in EVAL_EXCLUDED))
    fingerprint = make_fingerprint("defenses", settings, exclude=exclude, defaults=to_dict(DefenseCompareConfig()))
    return dataclasses.replace(fingerprint, extendable=("methods",))


def _claim(config: DefenseCompareConfig, out: Path, fresh: bool) -> None:
    """Check ``out`` may hold this comparison before anything is written there (a refusal names ``--fresh``)."""
    def legacy(run: Path):  # a comparison made before fingerprints: checked against the config.yaml it saved
        return legacy_fingerprint(run / "config.yaml", lambda p: to_dict(load_config(DefenseCompareConfig, p)),
                                  comparison_fingerprint)

    claim_run_dir(out, comparison_fingerprint(to_dict(config)), outputs=OUTPUTS, overwrite=fresh, legacy=legacy,
                  overwrite_flag=FRESH)


def _load_once(evaluation: EvalConfig) -> tuple[Any, Any]:
    if evaluation.model.backend != "hf":
        return None, None  # run_eval connects to the endpoint (or starts vLLM) per method
    from safealign.models.load import load_model

    m = evaluation.model
    return load_model(m.name, device=m.device, dtype=m.dtype, trust_remote_code=m.trust_remote_code,
                      revision=m.revision)


def comparison_summary(config: DefenseCompareConfig, results: dict[str, Any], seconds: float) -> dict[str, Any]:
    """Per method: ASR per attack (first judge), over-refusal, cost per answer and its multiple of the bare
    model's (the first method without defenses, else the first method)."""
    from safealign.eval.cost import cost_multiple

    base = next((m.name for m in config.methods if not m.defenses), config.methods[0].name)
    judge = config.eval.judges[0]
    methods = {}
    for method in config.methods:
        summary = results[method.name]
        rates = summary.over_refusal.get("refusal_rate", {})
        methods[method.name] = {
            "defenses": [{"name": d.name, "params": dict(d.params)} for d in method.defenses],
            "asr": {a: s[judge].to_json() for a, s in summary.attacks.items() if judge in s},
            "over_refusal": {k: rates.get(k) for k in ("all", "ordinary", "borderline") if rates.get(k)},
            "cost": summary.cost,
            "cost_multiple": cost_multiple(summary.cost, results[base].cost),
            "described": summary.defenses,
        }
    return {"kind": "defense_comparison", "base": base, "judge": judge, "methods": methods, "wall_s": seconds}


def format_comparison(summary: dict[str, Any]) -> str:
    """The console table: ASR per attack, over-refusal, cost per answer and its multiple of the base."""
    methods = summary["methods"]
    attacks = sorted({a for m in methods.values() for a in m["asr"] if a != "any_attack"})
    head = ["method", *(f"{a} ASR" for a in attacks), "over-refusal", "tokens/answer", "s/answer",
            f"× {summary['base']} tokens", "× s"]  # fmt: skip
    rows = [head]
    for name, m in methods.items():
        cost, multiple = m["cost"], m["cost_multiple"]
        rows.append([name, *(_rate(m["asr"].get(a), "asr") for a in attacks),
                     _rate(m["over_refusal"].get("all"), "rate"),
                     _num(cost.get("generated_tokens")), _num(cost.get("seconds"), 3),
                     _num(multiple.get("generated_tokens")), _num(multiple.get("seconds"))])  # fmt: skip
    widths = [max(len(r[i]) for r in rows) + 2 for i in range(len(head))]
    return "\n".join("".join(c.ljust(w) for c, w in zip(r, widths)) for r in rows)


def _rate(block: Any, key: str) -> str:
    if not isinstance(block, dict) or block.get(key) is None:
        return "-"
    ci = block.get("ci95")
    return f"{block[key]:.2f}" + (f" [{ci[0]:.2f},{ci[1]:.2f}]" if ci else "")


def _num(value: Any, digits: int = 1) -> str:
    return f"{value:.{digits}f}" if isinstance(value, (int, float)) else "-"
