#!/usr/bin/env bash
# One prepared GPU measurement (an H200 when the device tool lends one): mmrec.benchmark on the base
# presets next to the hand-written anchors, plus short GPU and DDP training runs. Run from the repo
# root on the GPU machine, with mmrec's dependencies installed:
#   bash experiments/benchmark_gpu.sh "$OUT"
# The hand-written reference loops (anchor_e2e.py, anchor_rank.py) are not part of mmrec: put them in
# the ignored folder .bench (or point BENCH_DIR at them).
set -euo pipefail
OUT=${1:-runs/benchmark_gpu}
BENCH=${BENCH_DIR:-.bench}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 WANDB_MODE=offline
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
python -c "import torch; print('torch', torch.__version__)" | tee -a "$OUT/gpu.txt"
# the references first, then mmrec on the same shapes
python "$BENCH/anchor_e2e.py" --batch 128 --seq 32 --audio-s 5 2>&1 | tail -2 | tee "$OUT/anchor_e2e.txt" || true
python "$BENCH/anchor_rank.py" 2>&1 | tail -1 | tee "$OUT/anchor_rank.txt" || true
python -m mmrec.benchmark encoder/text=base encoder/image=base encoder/audio=base \
  encoder.text.featurizer.max_length=32 encoder.image.featurizer.num_frames=1 encoder.audio.featurizer.seconds=5.0 \
  model.dim=512 model.user_id=true benchmark.device=cuda benchmark.batch_size=128 benchmark.steps=10 benchmark.warmup=3 \
  benchmark.rank.users=100000 "benchmark.rank.items=1000000" benchmark.rank.dim=256 benchmark.data.workers=[0,8] \
  benchmark.out="$OUT/benchmark.json" 2>&1 | tail -20 | tee "$OUT/benchmark.txt"
# the GPU training path end to end: bf16 on one GPU, then NCCL DDP on one device
python -m mmrec.train +experiment=fusion_attn trainer=gpu trainer.max_epochs=3 logger=csv hydra.run.dir="$OUT/gpu_run" 2>&1 | tail -25 | tee "$OUT/train_gpu.txt"
python -m mmrec.train +experiment=fusion_attn trainer=ddp trainer.devices=1 trainer.max_epochs=2 logger=csv hydra.run.dir="$OUT/ddp_run" 2>&1 | tail -25 | tee "$OUT/train_ddp.txt"
