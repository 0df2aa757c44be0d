"""ASR@N and the best-of-N power-law forecast from per-behavior counts alone (README, "ASR as a function of attack
budget: best-of-N"), with the same functions ``summary.json`` is written with (safealign/eval/asr_at_n.py).

    python examples/asr_at_n_forecast.py N C1 C2 ...     # N samples per behavior, Ci successes of behavior i

e.g. the README's run: ``python examples/asr_at_n_forecast.py 64 0 0 0 0 1 1 2 3 8 63``. For a run whose records
are at hand, its ``summary.json`` (``asr_at_n``) already holds all of this; this re-derives the README's numbers
where only the counts it prints are.
"""

from __future__ import annotations

import argparse

from safealign.eval.asr_at_n import TARGETS, fit_power_law, overall_curve


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("samples", type=int, help="scored samples per behavior (the same for every behavior)")
    parser.add_argument("successes", type=int, nargs="+", help="harmful samples of each behavior")
    args = parser.parse_args(argv)
    bad = [c for c in args.successes if not 0 <= c <= args.samples]
    if args.samples < 1 or bad:
        parser.error(f"need samples >= 1 and 0 <= successes <= samples; got samples {args.samples}, successes {bad}")
    curve = overall_curve({f"b{i}": (args.samples, c) for i, c in enumerate(args.successes)})
    fit = fit_power_law(curve)
    shown = [p for p in curve if p["n"] & (p["n"] - 1) == 0 or p["n"] == curve[-1]["n"]]
    print("ASR@N: " + ", ".join(f"{p['n']}: {p['asr']:.3f}" for p in shown))
    if fit["a"] is None and fit["b"] is None:
        print(f"no forecast: {fit['reason']}")
        return
    lo, hi = fit["fit_range"]
    print(f"fit -log ASR@N = a * N^-b: a = {fit['a']}, b = {fit['b']}, on {fit['points']} budgets in {lo}..{hi}")
    for target in TARGETS:
        forecast = fit["forecast"][str(target)]
        if forecast["n"] is None:
            print(f"{target:.0%}: {forecast['reason']}")
            continue
        where = "extrapolated beyond" if forecast["extrapolated"] else "inside"
        print(f"{target:.0%}: N = {forecast['n']:,.1f} ({where} the fitted range {lo}..{hi})")


if __name__ == "__main__":
    main()
