#!/usr/bin/env bash
# The GPU-only checks of nnunet-subfore in one run (under 7 minutes on one GPU); one table at the end.
#
#   bash benchmarks/gpu_check.sh               # GPU machine, repo root, no network: installs .whl/*.whl and
#                                              # the repo (as a wheel) into /tmp/site, then runs gpu_check.py
#   bash benchmarks/gpu_check.sh --cpu-smoke   # any machine with the package installed: the same code paths,
#                                              # tiny networks, -device cpu (the wheels are skipped unless
#                                              # python3 is 3.12)
#   bash benchmarks/gpu_check.sh --install-only   # only the installation and the environment rows
#
# With $OUT set the table also goes to $OUT/gpu_check.txt and the logs to $OUT/logs/ (4 files:
# install.log, run.log, commands.log, training_logs.txt). Details: benchmarks/GPU_CHECK_NOTES.md.
# Environment: GPU_CHECK_PYTHON (default python3), GPU_CHECK_SITE (install target), GPU_CHECK_BUDGET
# (seconds for everything, default 420 on the GPU), GPU_CHECK_WORKDIR (nnU-Net scratch folder under /tmp).
set -u
export GPU_CHECK_T0=${GPU_CHECK_T0:-$(date +%s)}
cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 1
REPO=$(pwd)

MODE=gpu
INSTALL_ONLY=0
ARGS=()
for a in "$@"; do
  case "$a" in
    --cpu-smoke) MODE=cpu-smoke; ARGS+=(--cpu-smoke) ;;
    --install-only) INSTALL_ONLY=1 ;;
    *) ARGS+=("$a") ;;
  esac
done
PY=${GPU_CHECK_PYTHON:-python3}
if [ "$MODE" = gpu ]; then
  SITE=${GPU_CHECK_SITE:-/tmp/site}; BUDGET=${GPU_CHECK_BUDGET:-420}; WORK=${GPU_CHECK_WORKDIR:-/tmp/gpu_check_work}
else
  SITE=${GPU_CHECK_SITE:-/tmp/gpu_check_smoke_site}; BUDGET=${GPU_CHECK_BUDGET:-3600}
  WORK=${GPU_CHECK_WORKDIR:-/tmp/gpu_check_smoke}
fi
if [ -n "${OUT:-}" ]; then
  LOGDIR=$OUT/logs; TABLE=$OUT/gpu_check.txt
else
  LOGDIR=/tmp/gpu_check_logs_$MODE; TABLE=/tmp/gpu_check_$MODE.txt
fi
case "$SITE" in /tmp/?*) rm -rf "$SITE" ;; esac   # a fresh install target (only ever under /tmp)
rm -rf "$LOGDIR"
mkdir -p "$LOGDIR" "$SITE"
INSTALL_LOG=$LOGDIR/install.log
PRE=/tmp/gpu_check_pre_$MODE.tsv   # rows for the table (kept out of $OUT: it holds few files)
: >"$PRE"
: >"$INSTALL_LOG"

row() { # name status seconds detail
  printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" >>"$PRE"
  echo "[$2] $1 (${3} s) $4"
}
logged() { # run a command, output to the install log; returns its status
  echo "\$ $*" >>"$INSTALL_LOG"
  "$@" >>"$INSTALL_LOG" 2>&1
}
tailmsg() { # the last error line of the install log (else its last line)
  local m
  m=$(grep -E 'Error|error:|ERROR' "$INSTALL_LOG" | grep -v '^\$' | tail -n 1)
  [ -n "$m" ] || m=$(grep -v '^\s*$' "$INSTALL_LOG" | tail -n 1)
  echo "$m" | sed 's/^ *//' | cut -c1-150
}

echo "== 0. installation and environment  (at $(( $(date +%s) - GPU_CHECK_T0 )) s)"
# -- the repo as a wheel (a real install: setuptools maps trainers/ to nnunet_subfore.trainers), built from a
#    copy so that nothing is written into the repo
t=$(date +%s)
SRC=$(mktemp -d /tmp/gpu_check_src.XXXXXX)
cp -r "$REPO/pyproject.toml" "$REPO/README.md" "$REPO/nnunet_subfore" "$REPO/trainers" "$SRC"/
REPO_WHEEL=""
if logged "$PY" -m pip wheel -q --no-index --no-deps --no-build-isolation --no-cache-dir -w "$SRC/dist" "$SRC"; then
  REPO_WHEEL=$(ls "$SRC"/dist/nnunet_subfore-*.whl 2>/dev/null | head -n 1)
fi
if [ -n "$REPO_WHEEL" ]; then
  row "build the repo's wheel (pip wheel --no-build-isolation)" PASS $(( $(date +%s) - t )) "$(basename "$REPO_WHEEL")"
else
  row "build the repo's wheel (pip wheel --no-build-isolation)" FAIL $(( $(date +%s) - t )) "$(tailmsg | cut -c1-100); the package is copied by hand instead"
fi
# -- the wheels (cp312 / py3) and the repo's, in ONE pip call (a second --upgrade --target call would replace
#    $SITE/bin, dropping the first call's console scripts); no network, into a folder PYTHONPATH puts first
t=$(date +%s)
WHEELS=()
if [ "$("$PY" -c 'import sys; print(sys.version_info[:2] == (3, 12))' 2>/dev/null)" = True ]; then
  WHEELS=("$REPO"/.whl/*.whl)
  what="${#WHEELS[@]} carried wheels"
else
  what="no carried wheels ($("$PY" -V 2>&1) is not 3.12: its own packages)"
fi
[ -n "$REPO_WHEEL" ] && WHEELS+=("$REPO_WHEEL") && what="$what + nnunet-subfore"
if [ ${#WHEELS[@]} -eq 0 ]; then
  row "pip install --target (no network)" SKIP 0 "$what"
elif logged "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" "${WHEELS[@]}"; then
  row "pip install --target (no network)" PASS $(( $(date +%s) - t )) "$what into $SITE"
else
  row "pip install --target (no network)" FAIL $(( $(date +%s) - t )) "$(tailmsg)"
fi
if [ -z "$REPO_WHEEL" ]; then
  # the same layout by hand (package-dir: trainers/ -> nnunet_subfore/trainers), so that the checks still run
  rm -rf "$SITE/nnunet_subfore"
  cp -r "$SRC/nnunet_subfore" "$SITE/nnunet_subfore" && rm -rf "$SITE/nnunet_subfore/trainers" && cp -r "$SRC/trainers" "$SITE/nnunet_subfore/trainers"
  mkdir -p "$SITE/bin"
  printf '#!%s\nimport sys\nfrom nnunet_subfore.cli import main\nsys.exit(main())\n' "$(command -v "$PY")" >"$SITE/bin/nnunet-subfore"
  chmod +x "$SITE/bin/nnunet-subfore"
fi
rm -rf "$SRC"
export PYTHONPATH=$SITE${PYTHONPATH:+:$PYTHONPATH} PATH=$SITE/bin:$PATH GPU_CHECK_SITE=$SITE
cd /tmp || exit 1   # no python -c from the repo root: its nnunet_subfore/ would shadow the installed one

# -- fall-backs carried in .whl/fallback: used only where the machine's own version does not do
t=$(date +%s)
notes=""
if ! logged "$PY" -c "import nnunetv2.training.nnUNetTrainer.primus.primus_trainers"; then
  # nnU-Net imports every trainer module when it looks for one; dynamic-network-architectures 0.4.4 wants timm<1.0.23
  if logged "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$SITE" "$REPO"/.whl/fallback/timm-*.whl; then
    notes="$notes timm 1.0.22 installed (the machine's failed nnU-Net's trainer imports);"
  fi
fi
if ! logged "$PY" -c "import typing_extensions as t, sys; from importlib.metadata import version as v; sys.exit(tuple(map(int, v('typing_extensions').split('.')[:2])) < (4, 16))"; then
  if logged "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$SITE" "$REPO"/.whl/fallback/typing_extensions-*.whl; then
    notes="$notes typing_extensions 4.16.0 installed (pydantic needs >= 4.16);"
  fi
fi
if logged "$PY" -c "
import importlib, sys
names = ['torch', 'numpy', 'nnunetv2', 'monai', 'SimpleITK', 'blosc2', 'acvl_utils', 'cc3d', 'dynamic_network_architectures',
         'batchgenerators', 'batchgeneratorsv2', 'nibabel', 'timm', 'nnunet_subfore', 'nnunet_subfore.trainers.subfore_variants',
         'nnunetv2.training.nnUNetTrainer.primus.primus_trainers']
mods = {n: importlib.import_module(n) for n in names}
vers = {n: getattr(mods[n], '__version__', None) for n in ('torch', 'numpy', 'monai', 'blosc2', 'timm')}
print('IMPORTS', ' '.join(f'{k} {v}' for k, v in vers.items()), 'SimpleITK', mods['SimpleITK'].Version_VersionString(),
      'nnunet_subfore from', mods['nnunet_subfore'].__file__)
"; then
  row "imports (nnunetv2, monai, SimpleITK, blosc2, ... nnunet_subfore)" PASS $(( $(date +%s) - t )) "$(grep '^IMPORTS' "$INSTALL_LOG" | tail -n 1 | cut -c9-190);$notes"
else
  row "imports (nnunetv2, monai, SimpleITK, blosc2, ... nnunet_subfore)" FAIL $(( $(date +%s) - t )) "$(tailmsg);$notes"
fi

# -- the machine
HEADER=()
if command -v nvidia-smi >/dev/null 2>&1; then
  while IFS= read -r line; do HEADER+=(--header "nvidia-smi -L: $line"); echo "$line"; done < <(nvidia-smi -L 2>&1 | head -n 4)
else
  HEADER+=(--header "nvidia-smi: not found"); echo "nvidia-smi: not found"
fi
ENVLINE=$("$PY" -c "
import platform, torch
gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'none'
print(f'python {platform.python_version()}, torch {torch.__version__} (CUDA {torch.version.cuda}), '
      f'cuda available {torch.cuda.is_available()}, GPU {gpu}, {__import__(\"os\").cpu_count()} CPUs')
" 2>&1 | tail -n 1)
echo "$ENVLINE"
HEADER+=(--header "$ENVLINE")
if [ "$MODE" = gpu ] && ! "$PY" -c "import torch, sys; sys.exit(not torch.cuda.is_available())" 2>/dev/null; then
  row "CUDA available to torch" FAIL 0 "$ENVLINE"
fi
echo "installation and environment took $(( $(date +%s) - GPU_CHECK_T0 )) s"
if [ "$INSTALL_ONLY" = 1 ]; then cat "$PRE"; exit 0; fi

# -- the checks (gpu_check.py keeps to the budget; timeout is the backstop)
LEFT=$(( BUDGET - ($(date +%s) - GPU_CHECK_T0) + 20 ))
[ "$LEFT" -lt 30 ] && LEFT=30
set -o pipefail
timeout -k 10 "$LEFT" "$PY" -u "$REPO/benchmarks/gpu_check.py" ${ARGS[@]+"${ARGS[@]}"} --budget "$BUDGET" --workdir "$WORK" \
  --logdir "$LOGDIR" --table "$TABLE" --pre "$PRE" ${HEADER[@]+"${HEADER[@]}"} 2>&1 | tee "$LOGDIR/run.log"
rc=$?
if [ $rc -eq 124 ] || [ $rc -eq 137 ]; then
  echo; echo "gpu_check.py was stopped at the time limit; the table as it stood:"; cat "$TABLE"
fi
exit $rc
