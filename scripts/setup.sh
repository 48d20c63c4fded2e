#!/usr/bin/env bash
# Installs what `make test` (default) or `make demo` (--demo) needs, or checks that it is there.
# Idempotent: a second run reinstalls nothing unless pyproject.toml or the engine's pins changed.
#
#   scripts/setup.sh           .venv with every extra, the Transformers engine server (serve/) and its pinned stack
#                              (torch from a wheelhouse), checkov in .venv-checkov, the control
#                              plane binaries, the engines' own argument parsers when
#                              scripts/setup-engines.sh is there
#   scripts/setup.sh --demo    .venv with the operator only, and the control plane binaries
#
# Needs: python3 >= 3.11, go (PATH or /usr/local/go/bin), openssl; tmux for the tests.
# Caches: pip's, Go's (GOCACHE, GOMODCACHE) and ${XDG_CACHE_HOME:-$HOME/.cache}/modeldeploy
# (the torch wheelhouse and the control plane binaries).
set -euo pipefail
cd "$(dirname "$0")/.."

profile=test
case "${1:-}" in
  --demo) profile=demo ;;
  "") ;;
  *) echo "usage: scripts/setup.sh [--demo]" >&2; exit 2 ;;
esac

started=$SECONDS
say() { printf 'setup: %s\n' "$*" >&2; }
die() { printf 'setup: error: %s\n' "$*" >&2; exit 1; }

# ---------------------------------------------------------------------------------------------
# system tools: one message listing everything missing
python=${PYTHON:-python3}
missing=()
if ! command -v "$python" >/dev/null; then
  missing+=("python3 (3.11 or newer)")
elif ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
  missing+=("python3 3.11 or newer (found $("$python" --version 2>&1))")
elif ! "$python" -c 'import venv, ensurepip' 2>/dev/null; then
  missing+=("python3's venv module (Debian/Ubuntu: apt-get install python3-venv)")
fi
if ! command -v go >/dev/null && [[ -x /usr/local/go/bin/go ]]; then
  export PATH="$PATH:/usr/local/go/bin"
fi
command -v go >/dev/null || missing+=("go 1.24 or newer (https://go.dev/dl; builds the control plane)")
command -v openssl >/dev/null || missing+=("openssl (makes the control plane's certificates)")
if [[ $profile == test ]]; then
  command -v tmux >/dev/null || missing+=("tmux (the demo's screen test; apt-get install tmux)")
fi
if ((${#missing[@]})); then
  say "missing on this machine:"
  printf '  - %s\n' "${missing[@]}" >&2
  exit 1
fi

# ---------------------------------------------------------------------------------------------
# python environments. A stamp file records what was installed: the profile and a hash of the
# files that decide it; a matching stamp skips pip entirely.
inputs_hash() {
  { "$python" --version; cat "$@"; } 2>&1 | sha256sum | cut -c1-16
}

venv=.venv
demo_hash=$(inputs_hash pyproject.toml)
test_hash=$(inputs_hash pyproject.toml serve/pyproject.toml serve/requirements.txt)
stamp_current() {  # stamp_current FILE HASH
  [[ -f $1 && "$(cat "$1")" == "$2" ]]
}

ensure_venv() {  # ensure_venv DIR
  if [[ ! -x $1/bin/python ]]; then
    say "creating $1"
    "$python" -m venv "$1"
    "$1/bin/python" -m pip install -q --upgrade pip
  fi
}

if [[ $profile == demo ]]; then
  if stamp_current "$venv/.setup-test" "$test_hash" || stamp_current "$venv/.setup-demo" "$demo_hash"; then
    say "python environment $venv: up to date"
  else
    ensure_venv "$venv"
    say "installing the operator into $venv"
    "$venv/bin/python" -m pip install -q -e '.[operator]'
    echo "$demo_hash" > "$venv/.setup-demo"
  fi
else
  if stamp_current "$venv/.setup-test" "$test_hash"; then
    say "python environment $venv: up to date"
  else
    ensure_venv "$venv"
    # The Transformers engine's pinned stack, then the project with every extra, resolved against
    # those pins. torch and its CUDA wheels are ~3 GB, and the package index may send nothing
    # pip's HTTP cache keeps, so the pinned wheels go to a wheelhouse of our own: a later
    # install (a new clone, a new venv) only resolves.
    wheels="${XDG_CACHE_HOME:-$HOME/.cache}/modeldeploy/wheels"
    mkdir -p "$wheels"
    say "fetching the engine's pinned wheels into $wheels (torch and CUDA: ~3 GB the first time)"
    "$venv/bin/python" -m pip download -q -d "$wheels" --find-links "$wheels" \
      -r serve/requirements.txt
    say "installing the project with every extra, the engine server and its pins into $venv"
    "$venv/bin/python" -m pip install -q --find-links "$wheels" -r serve/requirements.txt \
      -e '.[operator,dev,loader,gateway]' -e './serve[torch,test]'
    "$venv/bin/python" -c "import torch, transformers, bitsandbytes, fastapi, uvicorn, openai, \
aiohttp, huggingface_hub, modelscope, modeldeploy_serve" \
      || die "the serving stack does not import after the install"
    echo "$test_hash" > "$venv/.setup-test"
  fi

  # checkov pins old packaging and networkx: an environment of its own
  checkov_version=3.3.30
  if stamp_current .venv-checkov/.setup "$checkov_version"; then
    say "checkov .venv-checkov: up to date"
  else
    ensure_venv .venv-checkov
    say "installing checkov $checkov_version into .venv-checkov"
    .venv-checkov/bin/python -m pip install -q "checkov==$checkov_version"
    echo "$checkov_version" > .venv-checkov/.setup
  fi
fi

# ---------------------------------------------------------------------------------------------
# the control plane binaries: built once per set of inputs, then reused (e2e/cluster/build says
# which it builds and how long a first build takes)
bin_dir=$(e2e/cluster/build | tail -n 1)
say "control plane binaries: $bin_dir"

if [[ $profile == test && -f scripts/setup-engines.sh ]]; then
  say "the engines' own argument parsers (scripts/setup-engines.sh)"
  bash scripts/setup-engines.sh
fi

say "ready in $((SECONDS - started))s"
