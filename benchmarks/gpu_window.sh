#!/usr/bin/env bash
# One call of a GPU window for model 2 (N=192, M=320, five channel groups), as the device tool
# runs it from the repository root. Prepare here, once per session, with
# `bash benchmarks/gpu_prepare.sh` (the training photos as AVIF in .pack, the wheels in .whl, 3
# Kodak images in .gpu_in, the shipped weights moved out; it checks the 64 MiB a call carries),
# then run(command="bash benchmarks/gpu_window.sh SECONDS [speed|resume]",
# carry=[".pack", ".whl", ".gpu_in"], timeout_s=SECONDS + 20). The call ends within about
# SECONDS: it trains for what is left after the other steps (100 s are kept for loading,
# exporting and the codec measurement). One call of 570 s fits a 15-minute window with the
# machine's start; a second call resumes only if it follows at once (the machine goes back
# about 30 s after a call, with /tmp): make it with "resume", which stops at once when there is
# nothing to resume, instead of training the candidate again from its start.
#
# Training starts from /tmp/vaecodec-window/run.ckpt when an earlier call on the same warm
# machine left one (outside the repository: the tree is copied afresh for every call, while /tmp
# stays, as torch.compile's cache did), at a peak learning rate of 1e-4 (re-warming to the first
# call's 2e-4 would undo its decay: phase 6 of learning_curve.md), else from
# weights/candidate.pt (a fresh optimizer, warmed up) when it exists, else from random weights.
# $COMPILE picks its --compile (default auto); $TRAIN_ARGS is appended (a dry run on a CPU:
# TRAIN_ARGS="--channels 16 --latents 40 --batch-size 2 --crop 64").
#
# With "speed" it first measures the training loop against vaecodec 0.4's on the 0.4 model, as
# CUDA graphs first (not measured yet), then compiled plainly (at most 2.5 minutes). After
# training it measures the codec (with the weights .gpu_in was prepared with) on CUDA against the
# CPU: benchmarks/gpu_codec.py; check the returned gpu.tar here with `python
# benchmarks/gpu_codec.py check`.
#
# The exported weights come back in $OUT as parts of 15 MiB (the device returns files of at most
# 16 MiB) with their SHA-256; join and check them here with `cat FILES_AT/candidate.pt.part-* >
# weights/candidate.pt && (cd weights && sha256sum -c FILES_AT/candidate.pt.sha256)`, then
# measure Kodak through the CLI before committing.
set -euo pipefail
seconds=${1:?seconds this call may take}
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
if [ -d .whl ]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl
    export PYTHONPATH=$PYTHONPATH:/tmp/site
fi
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
if [ "${2:-}" = speed ]; then
    timeout 150 python3 benchmarks/train_speed.py .pack --model 0.4 --batch-size 32 --crop 256 \
        --steps 200 --compile graphs --compile auto | tee "$OUT/speed.md" || true
fi
state=/tmp/vaecodec-window
mkdir -p $state
init=()
lr=2e-4
if [ -f $state/run.ckpt ]; then
    lr=1e-4
elif [ "${2:-}" = resume ]; then
    echo "nothing to resume in $state: this is a fresh machine" >&2
    exit 1
elif [ -f weights/candidate.pt ]; then
    init=(--init weights/candidate.pt)
fi
minutes=$(python3 -c "print(max(1, ($seconds - $SECONDS - 100) / 60))")
python3 -m vaecodec train .pack --checkpoint $state/run.ckpt "${init[@]}" --steps 10000000 \
    --minutes "$minutes" --batch-size 32 --crop 256 --lr $lr --decay 0.5 \
    --compile "${COMPILE:-auto}" \
    --export $state/candidate.pt ${TRAIN_ARGS:-} 2>&1 | tee "$OUT/train.log"
split -b 15M -d $state/candidate.pt "$OUT/candidate.pt.part-"
(cd $state && sha256sum candidate.pt) > "$OUT/candidate.pt.sha256"
if [ -d .gpu_in ]; then
    weights_in=$(cat .gpu_in/weights)  # the weights the files were made with
    [ -z "$weights_in" ] || export VAECODEC_WEIGHTS=$weights_in
    timeout 60 python3 benchmarks/gpu_codec.py measure .gpu_in -o "$OUT/gpu.tar" || true
fi
ls -l "$OUT"
