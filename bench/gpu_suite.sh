#!/usr/bin/env bash
# Issue 21's GPU measurements as ONE call on one H100/H200 (bench/README.md, "GPU suite"): safealign's speed
# options against TRL + Liger (and TRL) in the same process per shape, bf16, random-init Llama shapes:
#   1.5B full, 3.6B full, 8B LoRA at 2k context, 8B full fine-tuning (paged 8-bit AdamW, activation checkpointing).
# Each stage runs under its own time limit (SIGINT: the bench prints the systems that finished; SIGKILL
# KILL_AFTER seconds later if it has not ended). The limits are capped so that the worst case fits BUDGET
# (570 s, a 600-s device command less a margin): setup, then every stage's limit plus its KILL_AFTER grace, then
# RESERVE seconds for the combined table. Each stage's limit is also cut to what is left of the budget (a stage
# with under 30 s left is skipped, saying so). Then one combined table is printed. The TRL baselines run first in
# every stage, so a stage cut by its limit loses safealign rows, never the baselines its ratio columns need.
# Without CUDA it stops at once (exit 2, "no CUDA").
#
#   bash bench/gpu_suite.sh                 # from the repository root; results in $OUT (default runs/gpu_suite)
#
# Needs torch with CUDA, transformers, peft, accelerate, datasets, trl==1.16.0 and liger-kernel (TRL + Liger
# rows; without it they read "n/a (liger-kernel not installed)"); the 8B full stage needs bitsandbytes (else it
# is skipped with that reason). The device machine has no network: wheels in $WHEELS (default shared/wheels,
# e.g. `pip download --no-deps trl==1.16.0 liger-kernel bitsandbytes -d shared/wheels` beforehand) are installed
# from there when a package is missing, one at a time: an optional one that fails (liger-kernel, bitsandbytes) is a
# warning, a required one (trl, peft, accelerate, datasets) stops the suite (exit 3) before any stage runs.
# flash-attention is used when importable (varlen for padding-free rows).
set -u
cd "$(dirname "$0")/.."

install_missing() {  # modules to install from $WHEELS, space-separated; returns 1 when a required one failed
  local module req rc failed=""
  for module in $1; do
    case $module in
      trl) req=trl==1.16.0 ;;
      liger_kernel) req=liger-kernel ;;
      *) req=$module ;;
    esac
    # one pip call per package: pip installs nothing of a list when one wheel is absent
    timeout 90 pip install -q --no-index --find-links "$WHEELS" "$req" 2>&1 | tail -3
    rc=${PIPESTATUS[0]}  # pip's status (timeout's: 124 on expiry), not tail's
    [ "$rc" -eq 0 ] && continue
    case $module in
      liger_kernel | bitsandbytes)
        echo "warning: $req not installed from $WHEELS (pip exit $rc); what needs it is skipped" >&2 ;;
      *) echo "error: $req not installed from $WHEELS (pip exit $rc)" >&2; failed="$failed $req" ;;
    esac
  done
  if [ -n "$failed" ]; then
    echo "required packages missing:$failed; the suite stops before any stage" >&2
    return 1
  fi
}

if ! python -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  echo "no CUDA: torch.cuda.is_available() is False here; the GPU suite needs a CUDA device" >&2
  exit 2
fi
OUT=${OUT:-runs/gpu_suite}
WHEELS=${WHEELS:-shared/wheels}
BUDGET=${BUDGET:-570}  # seconds for the whole suite, counted from the start of this script ($SECONDS)
KILL_AFTER=15          # grace after a stage's SIGINT before SIGKILL
RESERVE=10             # left at the end for the combined table
mkdir -p "$OUT"
rm -f "$OUT/notes.txt"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export TOKENIZERS_PARALLELISM=false

missing=$(python - <<'EOF'
import importlib.util
print(" ".join(m for m in ("trl", "liger_kernel", "bitsandbytes", "peft", "accelerate", "datasets")
               if importlib.util.find_spec(m) is None))
EOF
)
if [ -n "$missing" ] && [ -d "$WHEELS" ]; then
  echo "installing from $WHEELS: $missing"
  install_missing "$missing" || exit 3
fi
timeout 20 nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python -c "import torch, transformers; print('torch', torch.__version__, 'cuda', torch.version.cuda, \
'transformers', transformers.__version__)"
ATTN=sdpa
python -c "import flash_attn" 2>/dev/null && ATTN=flash_attention_2
echo "attention: $ATTN"

SAFEALIGN=safealign-dpo-cached,safealign-dpo-cached-packed-grouped,safealign-edpo-cached-packed-grouped
TRL=trl-liger,trl-liger-precompute,trl
COMMON=(--device cuda --attn "$ATTN" --baselines trl-liger,trl-liger-precompute,trl --reps 1)

stage() {  # name, seconds, bench arguments...
  local name=$1 limit=$2
  shift 2
  local left=$((BUDGET - SECONDS - KILL_AFTER - RESERVE))
  if [ "$left" -lt 30 ]; then
    echo "skipped: ${left}s left of the suite's ${BUDGET}s budget" | tee "$OUT/$name.txt"
    return
  fi
  [ "$limit" -gt "$left" ] && limit=$left
  echo "== $name (limit ${limit}s): $*"
  timeout --signal=INT --kill-after="$KILL_AFTER" "$limit" python bench/dpo_throughput.py "${COMMON[@]}" "$@" \
    > "$OUT/$name.txt" 2> "$OUT/$name.log"
  echo "   rc $? ($(grep -c '^| ' "$OUT/$name.txt") table lines)"
}

# Nominal limits: 110 + 125 + 130 + 110 = 475 s, plus 4 x 15 s grace and the 10-s reserve: 545 s, which leaves
# 25 s of the 570-s budget for the setup above (a slower setup cuts the last stages, never the budget).
stage 1.5b 110 --shape 1.5b --warmup 2 --steps 6 --systems "$TRL,$SAFEALIGN,safealign-dpo-cached-naive"
stage 3.6b 125 --shape 3.6b --batch 4 --gradient-checkpointing --warmup 2 --steps 5 --systems "$TRL,$SAFEALIGN"
stage 8b-lora 130 --shape 8b --lora --seq 2048 --batch 2 --gradient-checkpointing --warmup 2 --steps 4 \
  --systems "trl-liger,trl,safealign-dpo-cached,safealign-dpo-cached-packed-grouped"
if python -c "import bitsandbytes" 2>/dev/null; then
  stage 8b-full 110 --shape 8b --seq 2048 --batch 1 --ref-batch 4 --gradient-checkpointing \
    --optimizer paged_adamw_8bit --warmup 2 --steps 4 \
    --systems "trl-liger-precompute,safealign-edpo-cached-packed-grouped,safealign-dpo-cached-packed-grouped"
else
  echo "skipped: bitsandbytes is not installed (8-bit AdamW is what makes 8B full fine-tuning fit)" \
    | tee "$OUT/8b-full.txt"
fi

timeout "$RESERVE" python - "$OUT" <<'EOF'
"""One table: every stage's rows with the stage in front (the stages share their columns via --baselines)."""
import sys
from pathlib import Path

out = Path(sys.argv[1])
header, rows = None, []
for stage in ("1.5b", "3.6b", "8b-lora", "8b-full"):
    path = out / f"{stage}.txt"
    text = path.read_text() if path.exists() else ""
    lines = [l for l in text.splitlines() if l.startswith("|")]
    if not lines:
        why = text.strip().splitlines()[0] if text.strip() else f"no table (see {stage}.log)"
        rows.append(f"| {stage} | {why} |")
        continue
    header = header or ["| stage " + lines[0], "|---" + lines[1]]
    rows += [f"| {stage} " + line for line in lines[2:]]
    notes = [l for l in text.splitlines() if l.startswith("- ") or "device cuda" in l]
    (out / "notes.txt").open("a").write(f"## {stage}\n" + "\n".join(notes) + "\n")
print("\n".join((header or []) + rows))
print()
print((out / "notes.txt").read_text() if (out / "notes.txt").exists() else "")
EOF
