"""The evaluation run: behaviors → attacks → target ChatModel → judges → records.jsonl → summary.json.

Resumable: every attempt is appended to ``records.jsonl`` as soon as it is judged; a re-run with the
same ``output_dir`` skips recorded (behavior, attack, attempt) keys, so Ctrl-C or a crash loses at most
the batch in flight: up to ``generation.batch_size`` attempts of a cheap attack (direct, template, ...),
whose attempts are batched across behaviors, or one behavior's search (pair, tap, crescendo, autodan, gcg:
``Attack.searches``), whose attempts are answered and recorded before the next search starts. With
``retry_errors`` a resumed run retries what failed from its record, never by running the attack again:
a failed generation is generated again from the recorded conversation (a search's prompt is kept), and
a verdict that failed (judge endpoint down, unparseable judge output) is judged again on the recorded
answer. Each new verdict carries its judge's digest (:func:`judge_digest`); a resume whose judge is described
otherwise (changed code, or other weights of its model at the same path: the params are the run's fingerprint) is
warned about, not refused (:func:`warn_changed_judges`). Programmatic entry point: :func:`run_eval`.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path
from typing import Any, Sequence

from tqdm.auto import tqdm

from safealign.config import load_config, save_config, to_dict
from safealign.data.behaviors import write_behaviors
from safealign.errors import UserError
from safealign.eval.attacks.base import Attack, AttackContext, build_attack, check_attack
from safealign.eval.attacks.gcg_multi import DEFAULT_FILE as GCG_MULTI_SUFFIX
from safealign.eval.backends import ChatModel, GenerationParams, build_chat_model, chat_model_identity
from safealign.eval.backends.base import with_seeds
from safealign.eval.benign import BenignSet, benign_answers, benign_set, refusal_detector, run_benign
from safealign.eval.bounds import bound_by_chars, bound_by_tokens
from safealign.eval.config import EvalConfig
from safealign.eval.cost import cost_summary
from safealign.eval.defenses.base import FITTED_NAME, check_defenses, defense_layers, keep_fitted, wrap_target
from safealign.eval.judges.agreement import pairwise_agreement
from safealign.eval.judges.base import Judge, build_judge
from safealign.eval.records import RecordStore, failed_verdicts, recorded_answer, recorded_attempt
from safealign.eval.registries import ATTACKS, JUDGES
from safealign.eval.resume_check import check_recorded_prompts
from safealign.eval.summary import format_table, summarize
from safealign.interrupt import raise_if_stop_requested, stop_on_sigterm
from safealign.io import write_json
from safealign.io.records import AttemptRecord, answered_by_defense
from safealign.io.summaries import EvalSummary
from safealign.types import Attempt, Behavior, Completion, Verdict

logger = logging.getLogger(__name__)

# what --overwrite removes (gcg_multi's suffix and the defenses' fitted values too: a new run must not reuse what
# was optimised or fitted for the old settings)
EVAL_OUTPUTS = ("records.jsonl", "summary.json", "config.yaml", "behaviors.jsonl", "benign", GCG_MULTI_SUFFIX,
                FITTED_NAME)


def run_eval(
    config: EvalConfig,
    model: Any = None,
    tokenizer: Any = None,
    *,
    chat_model: ChatModel | None = None,
    behaviors: Sequence[Behavior] | None = None,
    judges: dict[str, Judge] | None = None,
    overwrite: bool = False,
    benign: BenignSet | None = None,
    overwrite_flag: str = "--overwrite",
) -> EvalSummary:
    """Run (or resume) an evaluation and return the summary (also written to ``summary.json``).

    ``model``/``tokenizer``: an already-loaded HF model to attack (no reload). ``chat_model``: any
    ChatModel instead (remote endpoint, fake). ``behaviors``/``judges``/``benign`` (over-refusal prompts)
    override what the config names.
    Resuming requires the run directory's fingerprint to match (safealign.io.rundir) and the recorded prompts of
    the deterministic attacks to be the ones this code builds (safealign.eval.resume_check); ``overwrite``
    deletes an earlier run's outputs there instead. ``overwrite_flag``: how the calling command offers
    ``overwrite``, named in a refusal (``safealign defenses`` says ``--fresh``).
    """
    config.validate()
    _check_names(config, judges)
    # built and checked against the backend before anything loads (a token-level defense on an endpoint fails here)
    defenses = check_defenses(config.defenses, None if chat_model is not None else config.model.backend)
    passed_in = behaviors is not None
    benchmark: dict[str, Any] = {}
    loaded = None
    if behaviors is None:
        from safealign.eval.benchmarks import load_benchmark_set, select_configured

        loaded = load_benchmark_set(config.behaviors)
        if loaded.copyright:  # left out (behaviors.copyright is false)
            logger.warning("%s: %d HarmBench copyright behaviors left out (behaviors.copyright: true with judges "
                           "[harmbench] or [copyright] scores them by hashing)", config.behaviors.path,
                           len(loaded.copyright))
        benchmark = loaded.describe()  # e.g. how many HarmBench copyright rows were left out
        behaviors = select_configured(loaded.harmful, config.behaviors)
    if not behaviors:
        if loaded is not None and loaded.benign and not loaded.harmful:
            raise UserError(f"behaviors.path {config.behaviors.path} holds only benign prompts ({len(loaded.benign)}, "
                            f"{loaded.layout} layout): pass it as benign.path with a harmful behaviors file")
        raise UserError("no behaviors selected: check behaviors.path and its filters")
    if benign is None:
        benign = benign_set(config, loaded)  # its files are read before the model loads
    behaviors, bounded = bound_by_chars(config.behaviors, behaviors)  # a 5 MB behavior must not reach the model
    for name in config.attacks:  # before the model loads and before any attack generates
        check_attack(name, config.attack_params.get(name), behaviors)
    label = _model_label(config, model, chat_model)
    out = Path(config.output_dir)
    handed_in = model is not None or chat_model is not None
    # hashed once: the target's identity below reuses it (an in-memory model's parameters are costly to hash)
    inner, early = _passed_in_identity(model, chat_model)
    # the configured defenses and any around a handed-in chat model (the demo's), as wrap_target will stack them
    layers = [*defenses, *defense_layers(chat_model)]
    fingerprint = _claim(out, config, label if handed_in else None, behaviors if passed_in else None, overwrite,
                         _identity_before_load(config, handed_in, early), overwrite_flag, layers)
    target = chat_model or build_chat_model(config.model, model=model, tokenizer=tokenizer)
    judges = judges or {name: build_judge(name, config.judge_params.get(name)) for name in config.judges}
    params = generation_params(config)
    behaviors, by_tokens = bound_by_tokens(config.behaviors, behaviors, target, params)
    if not behaviors:
        raise UserError("no behaviors left: every one is too long (behaviors.too_long=skip)")
    bounds = {"too_long": config.behaviors.too_long, **_add_counts(bounded, by_tokens)}
    store = RecordStore(out / "records.jsonl")
    warn_changed_judges(store, judges)
    # a resumed run's prompts, rebuilt (as attacked: after the bounds) and compared before anything is generated
    check_recorded_prompts(store, {name: config.attack_params.get(name) for name in config.attacks}, behaviors,
                           overwrite_flag)  # fmt: skip
    write_behaviors(out / "behaviors.jsonl", behaviors)  # as attacked: what a later judge needs (judge records)
    model, tokenizer = _white_box(target, model, tokenizer)  # white-box attacks optimise against the bare model
    target = wrap_target(target, defenses, params)  # calibrates and loads scorers, still before any generation
    layers = defense_layers(target)  # the configured defenses and any around a handed-in chat model
    keep_fitted(out, layers)  # a resume answers with the λ or τ its first session fitted, not a refit's
    early_stop = judges[config.early_stop_judge or next(iter(judges))]
    context = AttackContext(target, params, judge=early_stop, model=model, tokenizer=tokenizer, work_dir=out,
                            records=store)  # fmt: skip
    first_batch = FirstBatchCheck(f"{type(target).__name__} for model {label!r}", params.batch_size)
    reuse = inner is not None and getattr(target, "model", None) is inner  # the same local model answers
    identity = early if reuse else target_identity(config, target)
    started = time.perf_counter()
    complete = False
    over_refusal: dict[str, Any] = {}
    try:
        with stop_on_sigterm():  # SIGTERM ends the run at the next generation step, keeping the records
            for name in config.attacks:
                attack = build_attack(name, config.attack_params.get(name), context)
                _run_attack(attack, behaviors, target, judges, params, store, config.retry_errors, first_batch)
            first_batch.finish()  # a run of fewer generations than one batch is checked on what it made
            if benign:
                over_refusal = run_benign(target, benign, params, refusal_detector(judges), out / "benign",
                                          overwrite_flag)
        complete = True
    finally:  # also on Ctrl-C: the summary reflects what is recorded so far
        seconds = time.perf_counter() - started
        summary = _write_summary(out, store, behaviors, config, judges, complete, seconds, label, bounds,
                                 identity, fingerprint, benchmark, over_refusal, layers, benign)
    logger.debug("evaluation summary (%s):\n%s", out, format_table(summary))  # the CLI prints it
    return summary


def _claim(out: Path, config: EvalConfig, attacked: str | None, behaviors: Sequence[Behavior] | None,
           overwrite: bool, weights: dict[str, Any], overwrite_flag: str,
           layers: Sequence[Any] = ()) -> str:  # fmt: skip
    """Check ``out`` may hold this run before anything is written there, then save its config; returns
    the run's fingerprint digest (recorded in ``summary.json``). ``weights``: the attacked model's identity;
    ``layers``: the defenses the target answers through (each layer's effective settings are fingerprinted)."""
    from safealign.io.rundir import claim_run_dir, eval_fingerprint, legacy_fingerprint
    from safealign.models.identity import setup_fingerprint, setup_keys

    def legacy(run: Path):
        return legacy_fingerprint(run / "config.yaml", lambda p: to_dict(load_config(EvalConfig, p)), eval_fingerprint)

    fingerprint = eval_fingerprint(to_dict(config), attacked=attacked, behaviors=behaviors,
                                   weights=weights.get("fingerprint"), setup=setup_fingerprint(weights),
                                   defaults=to_dict(EvalConfig()), defenses=[d.fingerprint() for d in layers],
                                   more_setup=setup_keys(weights, "model."))
    claim_run_dir(out, fingerprint, outputs=EVAL_OUTPUTS, overwrite=overwrite, legacy=legacy,
                  overwrite_flag=overwrite_flag)
    save_config(config, out / "config.yaml")
    return fingerprint.digest


def _passed_in_identity(model: Any, chat_model: Any) -> tuple[Any, dict[str, Any] | None]:
    """The local model handed in (directly or inside a chat model) and its identity; (None, None) otherwise."""
    from safealign.models.identity import loaded_identity

    inner = model if model is not None else getattr(chat_model, "model", None)
    return (inner, loaded_identity(inner)) if hasattr(inner, "state_dict") else (None, None)


def _identity_before_load(config: EvalConfig, passed: bool, identity: dict[str, Any] | None) -> dict[str, Any]:
    """The attacked weights' identity (safealign.models.identity), known before anything loads: a passed-in
    model's, or that of the weights the spec names; empty where none can be seen (endpoints)."""
    from safealign.models.identity import model_identity

    if passed:
        return identity or {}
    if config.model.backend == "hf":  # a spec that names nothing fails here, before the run directory is touched
        return model_identity(config.model.name, config.model.revision)
    if config.model.backend == "vllm":  # vLLM also takes names that are not local or hub specs
        try:
            return model_identity(config.model.name, config.model.revision)
        except UserError:
            return {}
    return {}


def generation_params(config: EvalConfig) -> GenerationParams:
    g = config.generation
    return GenerationParams(max_new_tokens=g.max_new_tokens, do_sample=g.do_sample, temperature=g.temperature,
                            top_p=g.top_p, stop=tuple(g.stop), batch_size=g.batch_size, seed=g.seed,
                            max_prompt_tokens=g.max_prompt_tokens)  # fmt: skip


def _add_counts(*counts: dict[str, int]) -> dict[str, int]:
    total = {"skipped": 0, "truncated": 0}
    for c in counts:
        for key, n in c.items():
            total[key] += n
    return total


def _model_label(config: EvalConfig, model: Any, chat_model: Any) -> str:
    """What was attacked, for the summary: a passed-in model's own name, not the config default."""
    if chat_model is not None:
        inner = getattr(chat_model, "model", None)  # a remote model's name, or an HF model
        if isinstance(inner, str):
            return inner
        model = inner if inner is not None else chat_model
    if model is not None:
        return str(getattr(model, "name_or_path", "") or type(model).__name__)
    return config.model.name


def target_identity(config: EvalConfig, target: ChatModel) -> dict[str, Any]:
    """Which weights answer (safealign.models.identity); vLLM loads ``config.model.name`` itself."""
    from safealign.models.identity import model_identity, remote_identity

    if config.model.backend == "vllm" and not hasattr(target, "model"):  # a local folder or hub id
        try:
            return model_identity(config.model.name, config.model.revision)
        except UserError:
            return remote_identity("vllm", config.model.name)
    return chat_model_identity(target)


def _white_box(target: ChatModel, model: Any, tokenizer: Any) -> tuple[Any, Any]:
    """The HF model and tokenizer behind the target, for white-box attacks (None for remote targets)."""
    from safealign.eval.backends.hf import HFChatModel

    if isinstance(target, HFChatModel):
        return target.model, target.tokenizer
    return model, tokenizer


def _check_names(config: EvalConfig, judges: dict[str, Judge] | None) -> None:
    """Fail before any work on unknown attack/judge names, here or in the params; params of a known plug-in the
    run does not use (a config narrowed on the command line, e.g. ``attacks=[direct]``) are ignored with a warning."""
    for name in config.attacks:
        ATTACKS.get(name)
    for name in [] if judges else config.judges:
        JUDGES.get(name)
    if not (judges or config.judges):
        raise UserError(f"no judges configured; valid: {', '.join(JUDGES.names())}")
    for kind, params, used, registry in (("attack_params", config.attack_params, config.attacks, ATTACKS),
                                         ("judge_params", config.judge_params, judges or config.judges, JUDGES)):
        stray = sorted(set(params) - set(used))
        unknown = [name for name in stray if name not in registry]
        if unknown:
            raise UserError(f"{kind} given for {unknown}, which are not registered; "
                            f"valid: {', '.join(registry.names())}")
        if stray:
            logger.warning("%s given for %s, which are not in this run (%s): ignored", kind, stray, ", ".join(used))
    if config.early_stop_judge and config.early_stop_judge not in (judges or config.judges):
        raise UserError(f"early_stop_judge {config.early_stop_judge!r} is not one of the run's judges")


def _run_attack(attack: Attack, behaviors: Sequence[Behavior], target: ChatModel, judges: dict[str, Judge],
                params: GenerationParams, store: RecordStore, retry_errors: bool,
                first_batch: FirstBatchCheck) -> None:  # fmt: skip
    pending: list[tuple[Behavior, Attempt, dict[str, Any]]] = []  # to generate, judge and record
    unjudged: list[tuple[Behavior, AttemptRecord]] = []  # answered, but a verdict failed: to judge again
    skipped = retried = 0
    attack.prepare(behaviors, [b for b in behaviors if store.needs_attack(b.id, attack.name)])
    for behavior in tqdm(behaviors, desc=f"attack {attack.name}", unit="behavior"):
        raise_if_stop_requested()  # attacks such as GCG work for long before anything is generated
        failed, misjudged = store.to_retry(behavior.id, attack.name, judges) if retry_errors else ([], [])
        if not (store.needs_attack(behavior.id, attack.name) or failed or misjudged):
            skipped += 1
            continue
        if store.needs_attack(behavior.id, attack.name):
            start = time.perf_counter()
            attempts = attack(behavior)
            base = {"n_attempts": len(attempts), "attack_s": (time.perf_counter() - start) / max(1, len(attempts))}
            pending += [(behavior, a, base) for a in attempts
                        if not store.is_recorded((behavior.id, a.attack, str(a.meta["id"])))]  # fmt: skip
        # a failed generation is sent again as recorded: running the attack again would redo a whole search
        # and record another prompt than the one the first answers were judged on
        pending += [(behavior, recorded_attempt(r), {"n_attempts": r.n_attempts,
                                                     "attack_s": r.timings.get("attack_s", 0.0)}) for r in failed]
        unjudged += [(behavior, r) for r in misjudged]
        retried += len(failed) + len(misjudged)
        # a search's attempts are recorded before the next search, so an interruption loses one search at most;
        # the backend still splits them into its batches
        if attack.searches and pending:
            _generate_and_record(pending, target, judges, params, store, first_batch)
            pending.clear()
        while len(pending) >= params.batch_size:
            _generate_and_record(pending[: params.batch_size], target, judges, params, store, first_batch)
            del pending[: params.batch_size]
        while len(unjudged) >= params.batch_size:
            _judge_again(unjudged[: params.batch_size], judges, store)
            del unjudged[: params.batch_size]
    if pending:
        _generate_and_record(pending, target, judges, params, store, first_batch)
    if unjudged:
        _judge_again(unjudged, judges, store)
    if skipped:
        logger.info("attack %s: %d behaviors already complete in the records, skipped", attack.name, skipped)
    if retried:
        logger.info("attack %s: %d recorded attempts retried (failed generation or verdict)", attack.name, retried)


def _generate_and_record(batch: list[tuple[Behavior, Attempt, dict[str, Any]]], target: ChatModel,
                         judges: dict[str, Judge], params: GenerationParams, store: RecordStore,
                         first_batch: FirstBatchCheck) -> None:  # fmt: skip
    behaviors = [b for b, _, _ in batch]
    # seeded by attempt: a sample is the same in any batch, at any place in it, and in a resumed run
    seeded = with_seeds(params, [(b.id, a.attack, str(a.meta["id"])) for b, a, _ in batch])
    completions = target.generate([conversation(a) for _, a, _ in batch], seeded)
    raise_if_stop_requested()  # whatever a backend returned after a stop request may be cut short: not recorded
    # Judges see what a user would: the prefill followed by the model's continuation; a defense's own answer (a
    # filter's refusal) alone, as no model continued the prefill there (AttemptRecord.answer reads records alike)
    answers = [dataclasses.replace(c, text=a.prefill + c.text, meta={**c.meta, "prefill": a.prefill})
               if c.error is None and a.prefill and not answered_by_defense(c.meta.get("defense")) else c
               for (_, a, _), c in zip(batch, completions)]  # fmt: skip
    verdicts: dict[str, list] = {}
    judge_s: dict[str, float] = {}
    for name, judge in judges.items():
        start = time.perf_counter()
        verdicts[name] = judge(behaviors, answers)
        judge_s[name] = (time.perf_counter() - start) / len(batch)
    digests = {name: judge_digest(judge) for name, judge in judges.items()}
    store.append([
        make_record(b, a, c, {n: v[i] for n, v in verdicts.items()}, {**base, "judge_s": judge_s}, digests)
        for i, ((b, a, base), c) in enumerate(zip(batch, completions))
    ])  # fmt: skip
    # each judge's verdicts on the answers it is meant to score (a failed generation is the backend's failure);
    # gathered only while the check has yet to run (it runs once)
    if not first_batch.checked:
        first_batch(completions, {name: [v for b, c, v in zip(behaviors, completions, vs)
                                         if c.error is None and judges[name].covers(b)]
                                  for name, vs in verdicts.items()})  # fmt: skip


def _judge_again(batch: list[tuple[Behavior, AttemptRecord]], judges: dict[str, Judge], store: RecordStore) -> None:
    """Judge recorded answers again with each judge whose verdict on them failed, keeping the answers and the
    other verdicts; a record is rewritten only where a verdict changed (one that fails the same way again
    would only grow the file)."""
    verdicts = [dict(r.verdicts) for _, r in batch]
    judge_s = [dict(t) if isinstance(t := r.timings.get("judge_s"), dict) else {} for _, r in batch]
    for name, judge in judges.items():
        todo = [i for i, (_, r) in enumerate(batch) if failed_verdicts(r, [name])]
        if not todo:
            continue
        start = time.perf_counter()
        new = judge([batch[i][0] for i in todo], [recorded_answer(batch[i][1]) for i in todo])
        digest = judge_digest(judge)
        for i, verdict in zip(todo, new):
            verdicts[i][name] = verdict_json(verdict, digest)
            judge_s[i][name] = (time.perf_counter() - start) / len(todo)
    now = time.strftime("%Y-%m-%dT%H:%M:%S")
    changed = [dataclasses.replace(r, verdicts=v, timings={**r.timings, "judge_s": s}, time=now)
               for (_, r), v, s in zip(batch, verdicts, judge_s) if v != r.verdicts]  # fmt: skip
    if changed:
        store.append(changed)


class BackendFailing(UserError):
    """Most generations of an evaluation's first batch failed: the backend is down or misconfigured."""


class JudgeFailing(UserError):
    """Most of a judge's verdicts on an evaluation's first batch failed: its endpoint, key or model is wrong."""


@dataclasses.dataclass
class FirstBatchCheck:
    """Stops a run whose first generation batch mostly failed, naming the backend and its first error, or whose
    first batch's answers a judge mostly failed to score, naming the judge and its first error.

    Without it a broken backend (wrong URL, missing key, out of memory) or judge (its endpoint's URL or key)
    runs through every behavior and the run ends "complete" with every record unscored. The batch's records are
    written first, so a re-run after the fix resumes (and retries them with ``retry_errors``). The first batch is
    the first ``size`` generations (``generation.batch_size``), gathered over calls: a search attack's answers are
    recorded one behavior at a time, and one transient failure among them must not stop the run. A judge is
    checked on its verdicts on the batch's answers that it is meant to score (:meth:`Judge.covers`).
    """

    backend: str
    size: int = 1
    checked: bool = False
    seen: int = 0
    failed: list[str] = dataclasses.field(default_factory=list)
    judged: dict[str, int] = dataclasses.field(default_factory=dict)  # judge -> verdicts on answers
    misjudged: dict[str, list[str]] = dataclasses.field(default_factory=dict)  # judge -> errors of those unscored

    def __call__(self, completions: Sequence[Completion], verdicts: dict[str, Sequence[Verdict]] | None = None) -> None:
        """``verdicts``: each judge's verdicts on the answers of ``completions`` it scores."""
        if self.checked:
            return
        self.seen += len(completions)
        self.failed += [c.error for c in completions if c.error is not None]
        for name, judged in (verdicts or {}).items():
            self.judged[name] = self.judged.get(name, 0) + len(judged)
            errors = [v.error or "no verdict" for v in judged if v.harmful is None]
            self.misjudged[name] = self.misjudged.get(name, []) + errors
        if self.seen >= self.size:
            self.finish()

    def finish(self) -> None:
        """Check what was seen so far, once (every attack has run: the last batch may be smaller than ``size``)."""
        if self.checked or not self.seen:
            return
        self.checked = True
        if 2 * len(self.failed) > self.seen:
            raise BackendFailing(f"evaluation stopped: {len(self.failed)} of {self.seen} generations of the first "
                                 f"batch failed on backend {self.backend}; first error: {self.failed[0]}")
        for name, n in self.judged.items():
            errors = self.misjudged.get(name, [])
            if 2 * len(errors) > n:
                raise JudgeFailing(f"evaluation stopped: {len(errors)} of {n} verdicts of judge {name!r} on the first "
                                   f"batch's answers failed; first error: {errors[0]} (check judge_params.{name}; "
                                   "the answers are recorded and judged again on resume)")  # fmt: skip


def conversation(attempt: Attempt) -> tuple[dict[str, str], ...]:
    """The attempt as a ChatModel conversation: a prefill becomes a trailing assistant message."""
    if attempt.prefill:
        return (*attempt.messages, {"role": "assistant", "content": attempt.prefill})
    return attempt.messages


def make_record(behavior: Behavior, attempt: Attempt, completion: Completion, verdicts: dict[str, Any],
                timing: dict[str, Any], digests: dict[str, str] | None = None) -> AttemptRecord:  # fmt: skip
    """``digests``: judge name -> :func:`judge_digest`, stored with that judge's verdict."""
    return AttemptRecord(
        behavior_id=behavior.id,
        category=behavior.category,
        attack=attempt.attack,
        attempt_id=str(attempt.meta["id"]),
        n_attempts=timing["n_attempts"],
        messages=list(attempt.messages),
        prefill=attempt.prefill,
        attempt_meta={k: v for k, v in attempt.meta.items() if k != "id"},
        completion={"text": completion.text, "error": completion.error,
                    "meta": {k: v for k, v in completion.meta.items() if k != "defense"}},  # steps: in `defense`
        verdicts={n: verdict_json(v, (digests or {}).get(n)) for n, v in verdicts.items()},
        timings={"attack_s": timing["attack_s"], "generate_s": completion.seconds, "judge_s": timing["judge_s"]},
        time=time.strftime("%Y-%m-%dT%H:%M:%S"),
        defense=list(completion.meta.get("defense", [])),
    )


def verdict_json(verdict: Verdict, digest: str | None = None) -> dict[str, Any]:
    """A verdict as records store it (``AttemptRecord.verdicts[judge]``), with its judge's digest when given."""
    return {"harmful": verdict.harmful, "error": verdict.error, "raw": verdict.raw,
            **({"score": verdict.score} if verdict.score is not None else {}),
            **({"judge_digest": digest} if digest is not None else {})}  # fmt: skip


def judge_digest(judge: Judge) -> str:
    """16 hex digits of the SHA-256 of the judge's class and :meth:`Judge.identity`, as JSON, with the weights of
    the models it runs (:meth:`Judge.weights`: a classifier or hf/vllm LLM judge retrained in place keeps its path,
    so its params alone would not tell its verdicts apart). Added only for a judge that runs a model: the refusal
    judge and an LLM judge behind an endpoint keep the digest their recorded verdicts carry."""
    from safealign.io.rundir import json_digest

    weights = judge.weights()
    return json_digest({"class": type(judge).__name__, **judge.identity(),
                        **({"weights": weights} if weights else {})})  # fmt: skip


def warn_changed_judges(store: RecordStore, judges: dict[str, Judge]) -> None:
    """Warn (never refuse: the params are the fingerprint's, and an identity's shape may change harmlessly) when
    recorded verdicts carry another digest than their judge's now: its code or its model's weights changed since
    they were judged, and the run's ASR would mix both. Records written before digests were recorded carry none
    and are not compared."""
    for name, judge in judges.items():
        now = judge_digest(judge)
        other = [d for r in store if isinstance(v := r.verdicts.get(name), dict)
                 and isinstance(d := v.get("judge_digest"), str) and d != now]  # fmt: skip
        if other:
            logger.warning("%s: %d recorded verdicts of judge %r were made by a judge described otherwise "
                           "(judge_digest %s; now %s): its code (rubric, substring list, prompt) or its model's "
                           "weights changed since, and this run's ASR mixes both; judge the answers again with "
                           "`safealign judge records` or start afresh",
                           store.path, len(other), name, ", ".join(sorted(set(other))), now)


def _write_summary(out: Path, store: RecordStore, behaviors: Sequence[Behavior], config: EvalConfig,
                   judges: dict[str, Judge], complete: bool, seconds: float, label: str,
                   bounds: dict[str, Any], identity: dict[str, Any], fingerprint: str,
                   benchmark: dict[str, Any], over_refusal: dict[str, Any],
                   defenses: Sequence[Any], benign: BenignSet) -> EvalSummary:  # fmt: skip
    ids = {b.id for b in behaviors}
    summary = dataclasses.replace(
        summarize(store, behaviors, list(config.attacks), list(judges)),
        input_bounds=bounds,  # behaviors skipped or truncated for length (safealign.eval.bounds)
        complete=complete,
        wall_s=round(seconds, 2),
        model=label,
        model_identity=identity,
        run_fingerprint=fingerprint,
        benchmark=benchmark,
        over_refusal=over_refusal,
        judges={name: {"class": type(j).__name__, **j.describe()} for name, j in judges.items()},
        records=str(out / "records.jsonl"),
        judge_agreement=pairwise_agreement([r for r in store if r.behavior_id in ids], config.attacks, list(judges)),
        defenses=[{"name": d.name, **d.describe()} for d in defenses],
        cost=cost_summary([r for r in store if r.behavior_id in ids], benign_answers(out / "benign", benign)),
    )
    return _keep_if_only_timed(out / "summary.json", summary)


def _keep_if_only_timed(path: Path, summary: EvalSummary) -> EvalSummary:
    """Write ``summary`` unless the summary already there differs only in its wall time: a resume that recorded
    nothing new (a sweep worker resuming the base model's evaluation) leaves the file, and committed results, as
    they were, with the wall time of the run that computed them. Returns the summary as written."""
    import json

    from safealign.io.jsonfile import dumps_json

    try:
        old = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        old = None
    new = json.loads(dumps_json(summary.to_json()))  # as read back: tuples as lists
    if isinstance(old, dict) and {**old, "wall_s": None} == {**new, "wall_s": None}:
        return dataclasses.replace(summary, wall_s=old.get("wall_s"))
    write_json(path, summary.to_json())
    return summary
