#!/usr/bin/env bash
# Installs and starts what the real-system tests need, on a fresh machine or a warm one
# (every step is idempotent and cached under ~/.cache/autodebug):
#   - Chromium, for the HTML report test;
#   - a single-node Slurm (munge, slurmctld, slurmd), for the Slurm deployer;
#   - dstack[server] in a venv, for the dstack deployer (the tests start the server);
#   - llama.cpp's llama-server and SmolLM2-135M, for the loop on a real engine (~11 min to build once).
set -euo pipefail
cd "$(dirname "$0")/.."

export DEBIAN_FRONTEND=noninteractive
step() { echo "== setup: $* =="; }

if ! command -v chromium >/dev/null; then
  step "chromium"
  apt-get update -qq
  apt-get install -y -qq chromium >/dev/null
fi

step "slurm"
bash scripts/slurm-up.sh

step "dstack server venv"
bash scripts/dstack-server.sh install

step "llama-server and SmolLM2"
bash scripts/llama-server.sh
