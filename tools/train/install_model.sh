#!/bin/sh
# Installs the output of a GPU training run (gpu_train.sh) as models/asa-tiny/.
#
# Usage: sh tools/train/install_model.sh RUN_OUTPUT_DIR
#   RUN_OUTPUT_DIR holds model-*.safetensors (or model.safetensors),
#   asa-tiny-files.tar.gz, metrics.json and train.log as the run wrote them.
# Then: redraws loss.png with matplotlib where Debian's python3-matplotlib is
# installed, and checks the model against the reference (check_model.py).
set -eu
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
SRC=${1:?usage: install_model.sh RUN_OUTPUT_DIR}
DEST="$ROOT/models/asa-tiny"
PY=${PYTHON:-/usr/bin/python3}

[ -f "$SRC/asa-tiny-files.tar.gz" ] || { echo "install_model.sh: no asa-tiny-files.tar.gz in $SRC" >&2; exit 1; }
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
tar -xzf "$SRC/asa-tiny-files.tar.gz" -C "$TMP"
cp "$SRC"/model*.safetensors "$TMP/asa-tiny/"
rm -rf "$DEST"
mkdir -p "$(dirname "$DEST")"
cp -r "$TMP/asa-tiny" "$DEST"
if "$PY" -c 'import matplotlib' 2>/dev/null; then
  "$PY" "$HERE/plot_loss.py" "$DEST/training/metrics.json" "$DEST/loss.png" >/dev/null
fi
du -sh "$DEST"
ls -l "$DEST" "$DEST/training"
"$PY" "$HERE/check_model.py" "$DEST"
