#!/usr/bin/env bash
# One call of a GPU window for model 2 (N=192, M=320, five channel groups), as the device tool
# runs it from the repository root. Prepare here, once per session:
#
#   vaecodec pack-images ../shared/data/train -o .pack --quality 90     # 27 MB of JPEGs
#   echo /.pack/ >> .git/info/exclude; echo /.whl/ >> .git/info/exclude
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#       --implementation cp --platform manylinux_2_17_x86_64 -d .whl constriction
#   mv weights/vaecodec.pt /tmp/   # the shipped weights need not travel (64 MiB in all)
#
# then run(command="bash benchmarks/gpu_window.sh MINUTES [speed]", carry=[".pack", ".whl"]).
# It trains for MINUTES from .gpu/run.ckpt when an earlier call of the same window left one, else
# from weights/candidate.pt (a fresh optimizer, warmed up) when it exists, else from random
# weights; with "speed" it first measures the training loop against vaecodec 0.4's (about a
# minute). The exported weights come back in $OUT as parts of 15 MiB (the device returns files
# of at most 16 MiB); join them here with `cat FILES_AT/candidate.pt.part-* >
# weights/candidate.pt`, then measure Kodak through the CLI before committing. $TRAIN_ARGS is
# appended to the training command (a dry run on a CPU: TRAIN_ARGS="--channels 16 --latents 40
# --batch-size 2 --crop 64").
set -euo pipefail
minutes=${1:?minutes of training}
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
if [ -d .whl ]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl
    export PYTHONPATH=$PYTHONPATH:/tmp/site
fi
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
if [ "${2:-}" = speed ]; then
    python3 benchmarks/train_speed.py .pack --batch-size 32 --crop 256 --steps 200 | tee "$OUT/speed.md"
fi
mkdir -p .gpu
init=()
if [ ! -f .gpu/run.ckpt ] && [ -f weights/candidate.pt ]; then
    init=(--init weights/candidate.pt)
fi
python3 -m vaecodec train .pack --checkpoint .gpu/run.ckpt "${init[@]}" --steps 10000000 \
    --minutes "$minutes" --batch-size 32 --crop 256 --lr 2e-4 --decay 0.5 \
    --export .gpu/candidate.pt ${TRAIN_ARGS:-} 2>&1 | tee "$OUT/train.log"
split -b 15M -d .gpu/candidate.pt "$OUT/candidate.pt.part-"
ls -l "$OUT"
