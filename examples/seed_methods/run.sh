#!/bin/bash
# Mechanism runs of the seed-paper methods on the embedded model (docs/seed-methods.md, README "Seed-paper
# methods"): two optimizer steps each on a few rows of the demo's self-generated pairs, reshaped into each
# method's layout (the .jsonl files beside this script). They show the code runs on a real model and which way
# its own metrics move; two steps on 4-8 rows are not results. Run from the repository root:
#   bash examples/seed_methods/run.sh [TEACHER]
# TEACHER: a DPO-trained adapter to distil from (default: the demo's, runs/demo/train/e-dpo/final). The
# embedded model is both teacher (after E-DPO) and student here: a mechanism test, not a distillation claim.
set -euo pipefail
D=examples/seed_methods
R=${RUNS:-runs/seed_methods}
TEACHER=${1:-runs/demo/train/e-dpo/final}
SHORT="data.split=null data.max_length=96 data.max_prompt_length=48 per_device_train_batch_size=2 logging_steps=1 reference.batch_size=4 max_steps=2 --overwrite"
safealign data select ../shared/data/hh_rlhf_harmless_base_test.jsonl.gz --method real --model smollm2-135m-instruct \
  --limit 64 --max-length 256 --fraction 0.5 --out $R/real_hh64.jsonl
safealign train configs/train/cut_judgments.yaml data.path=$D/cut_small.jsonl output_dir=$R/cut $SHORT \
  data.max_prompt_length=80 data.max_length=128
safealign train configs/train/dckd_distill.yaml data.path=$D/distill_small.jsonl output_dir=$R/dckd $SHORT \
  objective.params.teacher=$TEACHER
safealign train configs/train/adpa_distill.yaml data.path=$D/distill_small.jsonl output_dir=$R/adpa $SHORT \
  objective.params.teacher=$TEACHER
safealign train configs/train/mah_dpo.yaml data.path=$D/mah_small.jsonl output_dir=$R/mah $SHORT \
  per_device_train_batch_size=4 learning_rate=2e-3
for attr in harmless helpful; do for heads in 1,0 0,1; do  # head weights: "1,0" = head 0 alone, "0,1" = head 1
  safealign diagnose ranking --model $R/mah/final --data $D/mah_held4_$attr.jsonl --heads $heads \
    --max-length 96 --max-prompt-length 48 --batch-size 4 --json > $R/rank_${attr}_${heads/,/}.json
done; done
