"""Plain-text tables of a diagnosis, as ``safealign diagnose`` prints them."""

from __future__ import annotations

from typing import Any, Sequence

from safealign.pipelines.diagnose import Diagnosis


def format_diagnosis(diagnosis: Diagnosis, show: int = 10) -> str:
    """The figures of ``diagnosis`` and its first ``show`` pairs as text tables."""
    formatter = {"ranking": format_ranking, "entanglement": format_entanglement, "anchor": format_anchor,
                 "e_share": format_e_share, "hidden_norms": format_hidden_norms}
    return formatter[diagnosis.name](diagnosis.result, diagnosis.pairs, show)


def format_ranking(result: dict[str, Any], pairs: list[dict[str, Any]], show: int) -> str:
    s = result["summary"]
    acc, ref_acc = s["ranking_accuracy"], s.get("reference_ranking_accuracy", {})
    rows: list[tuple[str, Any]] = [
        ("ranking accuracy, summed log-probs", acc["summed"]),
        ("ranking accuracy, per-token log-probs", acc["normalized"]),
        ("reference ranking accuracy, summed", ref_acc.get("summed")),
        ("reference ranking accuracy, per-token", ref_acc.get("normalized")),
        (f"idealized ranking accuracy R* (β={s['beta']:g}, mean α={s.get('alpha_mean', 0):.3g})",
         s.get("idealized_ranking_accuracy")),
        ("difficulty c = rr − rc: mean", s.get("difficulty", {}).get("mean")),
        ("difficulty c: median", s.get("difficulty", {}).get("median")),
        ("share of pairs the reference mis-ranks (c > 0)", s.get("difficulty", {}).get("share_positive")),
        ("mean DPO loss vs reference", s.get("dpo_loss_mean")),
    ]
    if "fixed" in s:
        rows.append(("reference mis-ranked pairs the model fixed", f"{s['fixed']} / {s['reference_misranked']}"
                     + (f" ({s['fixed_share']:.1%})" if s["fixed_share"] is not None else "")))
        rows.append(("reference-correct pairs the model broke", f"{s['broken']} / {s['reference_ranked']}"))
    head = (f"ranking: {result['pairs']} pairs of {result['data']} ({result['dropped']} rows dropped)\n"
            f"model: {result['model']}   reference: {result['reference']}   α: {result['alpha']}\n"
            + _heads_line(result.get("heads"), result.get("head_attributes")))
    per_pair = table(("row", "pc", "pr", "ok", "rc", "rr", "c", "dpo loss", "≤ softplus(−βc)", "R* ok"),
                     [(p["row"], p["chosen_logps"], p["rejected_logps"], p["correct"], p.get("ref_chosen_logps"),
                       p.get("ref_rejected_logps"), p.get("difficulty"), p.get("dpo_loss"), p.get("dpo_loss_threshold"),
                       p.get("idealized_correct")) for p in pairs[:show]])
    return (head + "\n" + table(("figure", "value"), rows) + f"\n\nfirst {min(show, len(pairs))} pairs:\n" + per_pair
            + f"\n\nwall time: {result['wall_seconds']:.1f} s")


def _heads_line(weights: Sequence[float] | None, names: Sequence[str] | None) -> str:
    """The mix a multi-head model was scored with, each head with the attribute it was trained on."""
    if weights is None:
        return ""
    mix = ", ".join(f"{w:g} × head {k}" + (f" ({names[k]})" if names else "") for k, w in enumerate(weights))
    return f"heads: {mix}" + ("" if names else " (attributes not saved with the heads)") + "\n"


def format_entanglement(result: dict[str, Any], pairs: list[dict[str, Any]], show: int) -> str:
    s = result["summary"]
    a, b = s["weights"]
    figures = table(("figure", "mean", "median"), [
        ("⟨g_w, g_l⟩", s["dot"]["mean"], s["dot"]["median"]),
        ("cos(g_w, g_l)", s["cosine"]["mean"], s["cosine"]["median"]),
        ("‖g_w‖ (chosen)", s["chosen_norm"]["mean"], s["chosen_norm"]["median"]),
        ("‖g_l‖ (rejected)", s["rejected_norm"]["mean"], s["rejected_norm"]["median"]),
        ("ratio ⟨g_w,g_l⟩ / min(‖g_w‖², ‖g_l‖²)", s["ratio"]["mean"], s["ratio"]["median"]),
    ])
    shares = table(("share of pairs", "value"), [
        ("chosen log-prob falls (⟨g_w,g_l⟩ > ‖g_w‖²)", s["share_chosen_falls"]),
        ("rejected log-prob rises (⟨g_w,g_l⟩ > ‖g_l‖²)", s["share_rejected_rises"]),
        ("ratio > 1 (one side moves the wrong way)", s["share_ratio_above_1"]),
        (f"chosen falls, weighted (⟨g_w,g_l⟩ > (a/b)‖g_w‖², a={a:g}, b={b:g})", s["share_chosen_falls_weighted"]),
        ("rejected rises, weighted (⟨g_w,g_l⟩ > (b/a)‖g_l‖²)", s["share_rejected_rises_weighted"]),
    ])
    if "chosen_unchanged" in s:  # no first-order change: counted above as not moving the wrong way
        shares += (f"\npairs with no first-order change: chosen {s['chosen_unchanged']} "
                   f"(weighted {s['chosen_unchanged_weighted']}), rejected {s['rejected_unchanged']} "
                   f"(weighted {s['rejected_unchanged_weighted']})")
    per_pair = table(("row", "⟨g_w,g_l⟩", "cos", "‖g_w‖", "‖g_l‖", "ratio", "chosen rises", "rejected falls"),
                     [(p["row"], p["dot"], p["cosine"], p["chosen_norm"], p["rejected_norm"], p["ratio"],
                       p["chosen_rises"], p["rejected_falls"]) for p in pairs[:show]])
    head = (f"gradient entanglement: {result['pairs']} pairs of {result['data']} ({result['dropped']} rows dropped)\n"
            f"model: {result['model']}   parameters: {s['params']} ({s['parameter_count']:,} scalars)\n")
    return (head + "\n" + figures + "\n\n" + shares + f"\n\nfirst {min(show, len(pairs))} pairs:\n" + per_pair
            + f"\n\nwall time: {result['wall_seconds']:.1f} s")


def format_anchor(result: dict[str, Any], pairs: list[dict[str, Any]], show: int) -> str:
    s = result["summary"]
    figures = table(("figure", "value"), [
        ("harmful pairs (prompt changed by the prefix)", f"{s['harmful_pairs']} ({s['transformed_pairs']})"),
        ("Δchosen = log πref(y_w|x_s) − log πref(y_w|x), mean", s["chosen_shift_mean"]),
        ("Δrejected, mean", s["rejected_shift_mean"]),
        ("anchor gap Δchosen − Δrejected, mean", s["gap_mean"]),
        ("anchor gap, median", s["gap_median"]),
        ("share of pairs with a positive gap", s["gap_share_positive"]),
        (f"E-DPO − DPO starting logit, −β·gap (β={s['beta']:g})", s["edpo_logit_shift_mean"]),
    ])
    per_pair = table(("row", "Δchosen", "Δrejected", "gap"),
                     [(p["row"], p["chosen_shift"], p["rejected_shift"], p["gap"]) for p in pairs[:show]])
    head = (f"anchor gap: {result['pairs']} pairs of {result['data']} ({result['dropped']} rows dropped)\n"
            f"model: {result['model']}   prefix: {result['prefix']!r}\n")
    target = "\n\n" + format_anchor_target(result["target"]) if "target" in result else ""
    if s.get("reference_prefixes_cut"):
        figures += (f"\n{s['reference_prefixes_cut']} reference prompts lost (part of) the prefix to truncation; a "
                    "pair whose prefix was cut whole is not counted as changed: raise max_prompt_length")
    return (head + "\n" + figures + f"\n\nfirst {min(show, len(pairs))} harmful pairs:\n" + per_pair + target
            + f"\n\nwall time: {result['wall_seconds']:.1f} s")


def _difference(d: dict[str, Any]) -> str:
    """A paired difference with its interval; one prompt has none (safealign.eval.paired.paired_difference)."""
    if not d:
        return "-"
    interval = f"[{d['ci95'][0]:+.3f}, {d['ci95'][1]:+.3f}]" if d.get("ci95") else "(no interval: 1 prompt)"
    return f"{d['diff']:+.3f} {interval}"


def format_anchor_target(t: dict[str, Any]) -> str:
    """The reference's refusal rates as asked and with the prefix (the E-anchor's target), greedy and sampled."""
    rows = []
    for mode in ("greedy", "sampled"):
        if mode not in t:
            continue
        m, d = t[mode], t[mode].get("transformed_minus_plain", {})
        label = "greedy" if mode == "greedy" else f"sampled, {t['samples_per_prompt']} per prompt, T=1"
        rows.append((label, _rate(m, "plain"), _rate(m, "transformed"),
                     _difference(d)))
    return (f"what the reference answers ({t['prompts']} harmful prompts, {t['max_new_tokens']} new tokens, judge "
            f"{t['judge']}):\n" + table(("answers", "refusal as asked", "refusal with prefix", "prefix − asked [95%]"),
                                         rows))


def _rate(m: dict[str, Any], view: str) -> str:
    low, high = m[f"refusal_rate_{view}_ci95"] or (0.0, 0.0)
    return f"{m[f'refusal_rate_{view}']:.3f} [{low:.3f}, {high:.3f}]"


def format_e_share(result: dict[str, Any], pairs: list[dict[str, Any]], show: int) -> str:
    s = result["summary"]
    w, adam = s["nll_weight"], s["adam_first_step"]
    figures = table(("figure (gradients of the batch mean)", "value"), [
        ("‖g_DPO‖  DPO preference term", s["dpo_norm"]),
        ("‖g_E‖    E-DPO preference term", s["e_dpo_norm"]),
        ("‖g_NLL‖  NLL(chosen) term, unweighted", s["nll_norm"]),
        (f"‖g_E + W·g_NLL‖  an E-DPO run's gradient (W={w:g})", s["update_norm"]),
        ("‖g_E − g_DPO‖  the E-change", s["e_change_norm"]),
        ("E-change share ‖g_E − g_DPO‖ / ‖g_E + W·g_NLL‖", s["e_share"]),
        ("cos(g_E, g_DPO)", s["cosine_e_dpo"]),
        ("cos(E-DPO run's gradient, DPO run's)", s["cosine_updates"]),
        ("W·‖g_NLL‖ / ‖g_E‖", s["nll_to_preference"]),
        ("cos(g_NLL, g_E)", s["cosine_nll_e_dpo"]),
        ("AdamW step without history (exact at step 0): E-change share", adam["e_share"]),
        ("AdamW step without history: cos(E-DPO, DPO)", adam["cosine"]),
        ("AdamW step without history: share of moved coordinates whose sign differs", adam["share_sign_differs"]),
    ])
    groups = s["groups"]
    names = list(groups)
    per_group = table(("per group", *names), [
        (label, *(groups[g][key] for g in names)) for label, key in (
            ("pairs", "pairs"), ("‖g_DPO‖ (its share of the batch mean)", "dpo_norm"), ("‖g_E‖", "e_dpo_norm"),
            ("‖g_NLL‖", "nll_norm"), ("‖g_E − g_DPO‖", "e_change_norm"), ("mean z, DPO", "z_dpo_mean"),
            ("mean z, E-DPO", "z_e_dpo_mean"), ("mean weight σ(−z), DPO", "weight_dpo_mean"),
            ("mean weight σ(−z), E-DPO", "weight_e_dpo_mean"), ("mean anchor gap (z_DPO − z_E)/β", "gap_mean"),
            ("mean NLL(chosen) per token", "nll_mean"))
    ])
    per_pair = table(("row", "group", "z DPO", "z E-DPO", "σ(−z) DPO", "σ(−z) E-DPO", "gap", "NLL"),
                     [(p["row"], p["group"], p["z_dpo"], p["z_e_dpo"], p["weight_dpo"], p["weight_e_dpo"], p["gap"],
                       p["nll"]) for p in pairs[:show]])
    head = (f"E-share: {result['pairs']} pairs of {result['data']} ({result['dropped']} rows dropped), "
            f"{s['transformed_pairs']} with the prefix on the reference prompt{_cut(s)}\n"
            f"model: {result['model']}   at: {result['point']}   β={s['beta']:g}   W={w:g}\n"
            f"parameters: {s['params']} ({s['parameter_count']:,} scalars)   prefix: {result['prefix']!r}\n")
    return (head + "\n" + figures + "\n\n" + per_group + f"\n\nfirst {min(show, len(pairs))} pairs:\n" + per_pair
            + f"\n\nwall time: {result['wall_seconds']:.1f} s")


def _cut(s: dict[str, Any]) -> str:
    """The note on prefixes truncation cut, for the E-share's head line ("" where none was, or not recorded)."""
    cut = s.get("reference_prefixes_cut")
    return f" ({cut} lost (part of) it to truncation: raise max_prompt_length)" if cut else ""


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A plain left-aligned text table; floats with 4 significant digits."""
    cells = [[_cell(v) for v in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths)), "  ".join("-" * w for w in widths)]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths)) for row in cells]
    return "\n".join(lines)


def _cell(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def format_hidden_norms(result: dict[str, Any], pairs: list[dict[str, Any]], show: int) -> str:
    lines = [f"residual-stream concentration: {result['pairs']} sequences (prompt + {result['response']}) of "
             f"{result['data']}",
             f"{'layer':>5}  {'first-token norm':>16}  {'median token norm':>17}  {'top dims':<18}  "
             f"{'their share of |h|^2 (median; even spread)':<42}"]
    for row in result["summary"]["layers"]:
        dims = ",".join(map(str, row["top_dims"]))
        lines.append(f"{row['layer']:>5}  {row['first_token_norm']:>16.1f}  {row['token_norm_median']:>17.1f}  "
                     f"{dims:<18}  {row['top_share_median']:.2f} ({row['even_share']:.3f})")
    return "\n".join(lines)
