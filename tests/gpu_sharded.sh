#!/usr/bin/env bash
# Online sampling and GAIL under DeepSpeed ZeRO-3/ZeRO-2 and FSDP through `accelerate launch`, on one GPU: the
# launch commands CPU tests cannot run (accelerate refuses FSDP without an accelerator; DeepSpeed is not in
# requirements.txt). ZeRO-3 partitions the parameters even on one process, so sampling there goes through
# irl/sharding.py's gather; FSDP on one process runs NO_SHARD, so it checks the wiring, not the gathering
# (tests/test_sharded.py checks that on two CPU processes).
#
#   bash tests/gpu_sharded.sh OUT_DIR      # needs a CUDA GPU, deepspeed and this repository's requirements
set -u
OUT=${1:?output directory}
mkdir -p "$OUT"
PY=${PYTHON:-python3}
LAUNCH="$PY -m accelerate.commands.launch --num_processes 1 --num_machines 1 --mixed_precision no --dynamo_backend no"
FSDP="--use_fsdp --fsdp_version 1 --fsdp_auto_wrap_policy TRANSFORMER_BASED_WRAP
      --fsdp_transformer_layer_cls_to_wrap LlamaDecoderLayer --fsdp_use_orig_params true"
SMALL="--data data/math-sample --eval_size 0 --max_length 160 --vocab_size 300 --max_steps 3 --save_steps 3
       --logging_steps 1 --per_device_train_batch_size 4 --warmup_steps 0 --sample_max_new_tokens 16"
status=0
run() {  # name, then the command
  local name=$1; shift
  echo "=== $name: $*"
  if "$@" > "$OUT/$name.log" 2>&1; then echo "$name: exit 0"; else echo "$name: exit $?"; status=1; fi
  tail -n 4 "$OUT/$name.log"
  if [ -f "$OUT/$name/metrics.jsonl" ]; then
    $PY -c "import json,sys; rows=[json.loads(l) for l in open(sys.argv[1])]; r=[x for x in rows if 'train/loss' in x];
print(sys.argv[2], 'steps logged', len(r), {k: r[-1][k] for k in r[-1] if k.startswith(('train/loss','sample/','gail/disc_loss'))})" \
      "$OUT/$name/metrics.jsonl" "$name"
  fi
}
run mle $PY -m irl train $SMALL --output_dir "$OUT/mle"
run zero3_online $LAUNCH --use_deepspeed --zero_stage 3 --zero3_save_16bit_model true -m irl train $SMALL \
    --objective iqlearn --alpha 0.1 --output_dir "$OUT/zero3_online"
run zero2_gail $LAUNCH --use_deepspeed --zero_stage 2 -m irl train $SMALL --objective gail \
    --init "$OUT/mle/checkpoint-3" --output_dir "$OUT/zero2_gail"
run fsdp_online $LAUNCH $FSDP -m irl train $SMALL --objective iqlearn --alpha 0.1 --output_dir "$OUT/fsdp_online"
run fsdp_gail $LAUNCH $FSDP -m irl train $SMALL --objective gail --init "$OUT/mle/checkpoint-3" \
    --output_dir "$OUT/fsdp_gail"
# GAIL refuses ZeRO-3 with a one-line error, before training
echo "=== zero3_gail_refused"
$LAUNCH --use_deepspeed --zero_stage 3 -m irl train $SMALL --objective gail --init "$OUT/mle/checkpoint-3" \
    --output_dir "$OUT/zero3_gail" > "$OUT/zero3_gail_refused.log" 2>&1
grep -h "error: deepspeed: GAIL does not run under ZeRO-3" "$OUT/zero3_gail_refused.log" || status=1
exit $status
