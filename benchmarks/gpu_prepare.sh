#!/usr/bin/env bash
# Prepares this checkout for a GPU window (benchmarks/gpu_window.sh) and checks that what a call
# carries fits the device's 64 MiB. Run from the repository root, in the project's virtualenv:
#
#   bash benchmarks/gpu_prepare.sh [KODAK_IMAGES]     # default: 3
#
# It writes .pack (the training photos, AVIF 4:4:4), .whl (the wheels the GPU machine lacks:
# constriction, pytorch-msssim, and a Pillow that reads AVIF), .gpu_in (KODAK_IMAGES Kodak
# images with their files and CPU decodes, made with weights/candidate.pt), keeps the three out
# of git, and moves the shipped weights, which the window does not need, to $SHIPPED_AWAY
# (default /tmp/vaecodec-shipped.pt). Put them back when the window is over:
#
#   mv /tmp/vaecodec-shipped.pt weights/vaecodec.pt
set -euo pipefail
kodak_images=${1:-3}
shipped_away=${SHIPPED_AWAY:-/tmp/vaecodec-shipped.pt}
limit=$((64 << 20))
data=../shared/data

cd "$(git rev-parse --show-toplevel)"
python3 -m vaecodec --version >/dev/null  # the project's virtualenv, before anything is removed
[ "$kodak_images" -ge 1 ] || { echo "KODAK_IMAGES must be at least 1" >&2; exit 1; }
exclude=$(git rev-parse --git-path info/exclude)  # a worktree's .git is a file
mkdir -p "$(dirname "$exclude")"
for path in /.pack/ /.whl/ /.gpu_in/; do
    grep -qxF "$path" "$exclude" 2>/dev/null || echo "$path" >> "$exclude"
done
subset=$(mktemp -d)
trap 'rm -rf "$subset"' EXIT
rm -rf .pack .whl .gpu_in
python3 -m vaecodec pack-images "$data/train" -o .pack
wheel=(python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12
       --implementation cp -d .whl)
"${wheel[@]}" --platform manylinux_2_17_x86_64 'constriction>=0.4,<0.6' pytorch-msssim  # pyproject's pin
"${wheel[@]}" --platform manylinux_2_28_x86_64 'pillow>=11.3'
kodak=("$data"/kodak/*.png)
cp "${kodak[@]:0:$kodak_images}" "$subset"
VAECODEC_WEIGHTS=weights/candidate.pt python3 benchmarks/gpu_codec.py prepare "$subset" .gpu_in

if [ -f weights/vaecodec.pt ]; then
    mv weights/vaecodec.pt "$shipped_away"
    echo "shipped weights moved to $shipped_away: put them back after the window" >&2
fi

# What a call carries: the files git tracks or would track, plus the carried folders.
carried=$(python3 -c '
import os, subprocess
listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                        capture_output=True, check=True).stdout.decode().split("\0")
folders = [os.path.join(root, name) for folder in (".pack", ".whl", ".gpu_in")
           for root, _, names in os.walk(folder) for name in names]
print(sum(os.path.getsize(path) for path in listed + folders if os.path.isfile(path)))')
echo "a call carries $((carried >> 20)) MiB of the $((limit >> 20)) MiB allowed" >&2
if [ "$carried" -gt "$limit" ]; then
    echo "too much to carry: use fewer Kodak images, or a lower --quality for .pack" >&2
    exit 1
fi
