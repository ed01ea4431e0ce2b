#!/usr/bin/env bash
# A real dstack fleet on this machine, for autodebug's dstack deployer: a dstack server, an SSH fleet
# on 127.0.0.1, and a local base image, so a `type: service` runs a real engine in a container.
#
#   scripts/dstack-fleet.sh up      set up (or reuse) everything; print DSTACK_SERVER_URL=, DSTACK_TOKEN=,
#                                   DSTACK_PROJECT=, DSTACK_FLEET=, AUTODEBUG_DSTACK_VOLUME=,
#                                   AUTODEBUG_DSTACK_CLI= (the dstack CLI, for `dstack attach`) lines
#   scripts/dstack-fleet.sh down    stop what `up` started and undo what provisioning wrote (below)
#   scripts/dstack-fleet.sh status  print the lines of a fleet that is up, or exit 1
#   scripts/dstack-fleet.sh env     the same lines as `up`, as `export` statements for `eval`
#
# Runs only when asked (CI's .ci/setup.sh, or a developer); never from `cargo test`.
# Needs root (it installs packages and runs dockerd and an sshd). Exit status 3: cannot run here.
#
# WHAT THIS CHANGES ON THE MACHINE (all undone by `down`, except the installed packages and the image):
#   - installs Debian packages docker.io, openssh-server, debootstrap, iptables when missing;
#   - starts dockerd when no docker daemon answers (stopped by `down` only if this script started it);
#   - imports the docker image local/bookworm:1, built by debootstrap (cached as a tarball);
#   - starts on 127.0.0.1 only: an sshd on port $AUTODEBUG_DSTACK_SSH_PORT (2222), a static file server
#     for dstack's shim and runner binaries, and a dstack server (its own state, separate from
#     scripts/dstack-server.sh's default one, so the "no fleets" tests keep their empty server);
#   - dstack's SSH-fleet provisioning then writes /usr/local/bin/dstack-shim, /usr/local/bin/dstack-runner,
#     /etc/systemd/system/dstack-shim.service and ~/.dstack, and appends its project key to
#     ~/.ssh/authorized_keys; `down` removes those files and exactly the keys that were added.
# Everything else lives under ~/.cache/autodebug/dstack-fleet/. Every process started here closes the
# lock's descriptor (9>&-), or it would hold the lock for its whole life and block `down`.
#
# Why the stand-ins: provisioning runs `sudo systemctl ... restart dstack-shim`; this machine has no
# systemd and no sudo, so the fleet's sshd puts a `sudo` that runs its arguments and a `systemctl` that
# starts the shim from its unit file first on the session's PATH.
#
# Environment:
#   AUTODEBUG_DSTACK_SSH_PORT    sshd port on 127.0.0.1 (default 2222)
#   AUTODEBUG_DSTACK_FLEET_DIR   state and cache (default ~/.cache/autodebug/dstack-fleet)
#   AUTODEBUG_DSTACK_BINARIES    folder with dstack-{shim,runner}-linux-amd64.gz and SHA256SUMS
#                                (default: the workspace's ../shared/dstack-fleet/bin)
#   AUTODEBUG_DEBIAN_MIRROR      debootstrap mirror (default: the first deb.debian.org-like URI apt uses)
#   AUTODEBUG_DSTACK_FLEET_WAIT_S  seconds to wait for the fleet to become idle (default 300)
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
CACHE="${XDG_CACHE_HOME:-$HOME/.cache}/autodebug"
DIR="${AUTODEBUG_DSTACK_FLEET_DIR:-$CACHE/dstack-fleet}"
STATE="$DIR/state"
SSH_PORT="${AUTODEBUG_DSTACK_SSH_PORT:-2222}"
BINARIES="${AUTODEBUG_DSTACK_BINARIES:-$ROOT/../shared/dstack-fleet/bin}"
WAIT_S="${AUTODEBUG_DSTACK_FLEET_WAIT_S:-300}"
IMAGE="local/bookworm:1"
FLEET="autodebug-local"
PYTHON="${PYTHON:-python3}"
SERVER_STATE="$DIR/server"
# The files provisioning writes outside $DIR, removed by `down`.
PROVISIONED=(/usr/local/bin/dstack-shim /usr/local/bin/dstack-runner /etc/systemd/system/dstack-shim.service)

die() { echo "dstack-fleet.sh: $*" >&2; exit 1; }
cannot_run() { echo "dstack-fleet.sh: $*" >&2; exit 3; }
say() { echo "dstack-fleet.sh: $*" >&2; }

alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

stop_pidfile() {
  local file="$1" pid
  [ -f "$file" ] || return 0
  pid="$(cat "$file")"
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 20); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
    kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$file"
}

free_port() {
  "$PYTHON" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

ensure_packages() {
  local missing=()
  command -v dockerd >/dev/null || missing+=(docker.io)
  [ -x /usr/sbin/sshd ] || missing+=(openssh-server)
  command -v debootstrap >/dev/null || [ -x /usr/sbin/debootstrap ] || missing+=(debootstrap)
  command -v iptables >/dev/null || [ -x /usr/sbin/iptables ] || missing+=(iptables)
  [ ${#missing[@]} -eq 0 ] && return 0
  say "installing ${missing[*]} (apt-get, about 30 s)"
  DEBIAN_FRONTEND=noninteractive timeout 600 apt-get install -y -q "${missing[@]}" >"$STATE/apt.log" 2>&1 \
    || { tail -n 20 "$STATE/apt.log" >&2; cannot_run "apt-get install ${missing[*]} failed; log: $STATE/apt.log"; }
}

ensure_dockerd() {
  docker info >/dev/null 2>&1 && return 0
  say "starting dockerd (no docker daemon answered)"
  ( setsid nohup dockerd >"$STATE/dockerd.log" 2>&1 </dev/null 9>&- & echo $! >"$STATE/dockerd.pid" )
  for _ in $(seq 1 60); do docker info >/dev/null 2>&1 && return 0; sleep 1; done
  tail -n 20 "$STATE/dockerd.log" >&2
  die "dockerd did not answer within 60 s; log: $STATE/dockerd.log"
}

debian_mirror() {
  if [ -n "${AUTODEBUG_DEBIAN_MIRROR:-}" ]; then echo "$AUTODEBUG_DEBIAN_MIRROR"; return; fi
  local uri
  uri="$(grep -hoE '^(URIs:|deb) +http[^ ]*/debian/?( |$)' /etc/apt/sources.list /etc/apt/sources.list.d/* 2>/dev/null \
    | grep -oE 'http[^ ]*' | head -n 1 || true)"
  echo "${uri:-http://deb.debian.org/debian}"
}

ensure_image() {
  docker image inspect "$IMAGE" >/dev/null 2>&1 && return 0
  local tarball="$DIR/bookworm-rootfs.tar"
  if [ ! -s "$tarball" ]; then
    local rootfs="$DIR/rootfs.partial" mirror
    mirror="$(debian_mirror)"
    say "building the base image with debootstrap from $mirror (one time, about 2 minutes)"
    rm -rf "$rootfs"
    # libgomp1: llama-server links it; python3: dstack's runner setup uses it.
    timeout 900 debootstrap --variant=minbase \
      --include=python3,openssh-server,curl,ca-certificates,procps,iproute2,libgomp1 \
      bookworm "$rootfs" "$mirror" >"$DIR/debootstrap.log" 2>&1 \
      || { tail -n 20 "$DIR/debootstrap.log" >&2; rm -rf "$rootfs"; die "debootstrap failed; log: $DIR/debootstrap.log"; }
    tar -C "$rootfs" -cf "$tarball.partial" .
    mv "$tarball.partial" "$tarball"
    rm -rf "$rootfs"
  fi
  docker import - "$IMAGE" <"$tarball" >/dev/null
}

ensure_binaries() {
  mkdir -p "$DIR/bin"
  local name
  for name in dstack-shim-linux-amd64 dstack-runner-linux-amd64; do
    if [ ! -x "$DIR/bin/$name" ]; then
      [ -f "$BINARIES/$name.gz" ] || cannot_run "$BINARIES/$name.gz not found (set AUTODEBUG_DSTACK_BINARIES)"
      gunzip -c "$BINARIES/$name.gz" >"$DIR/bin/$name.partial"
      chmod +x "$DIR/bin/$name.partial"
      mv "$DIR/bin/$name.partial" "$DIR/bin/$name"
    fi
  done
  # SHA256SUMS names build/<file>; check the unpacked files against it.
  (cd "$DIR/bin" && sed 's# build/# #' "$BINARIES/SHA256SUMS" | sha256sum -c --quiet -) \
    || die "the unpacked dstack binaries in $DIR/bin do not match $BINARIES/SHA256SUMS"
}

ensure_file_server() {
  if alive "$STATE/files.pid" && curl -fsS -m 3 -o /dev/null -r 0-0 "$(cat "$STATE/files.url")/dstack-shim-linux-amd64"; then
    return 0
  fi
  stop_pidfile "$STATE/files.pid"
  local port
  port="$(free_port)"
  ( setsid nohup "$PYTHON" -m http.server --bind 127.0.0.1 --directory "$DIR/bin" "$port" \
      >"$STATE/files.log" 2>&1 </dev/null 9>&- & echo $! >"$STATE/files.pid" )
  echo "http://127.0.0.1:$port" >"$STATE/files.url"
  for _ in $(seq 1 30); do
    curl -fsS -m 3 -o /dev/null -r 0-0 "http://127.0.0.1:$port/dstack-shim-linux-amd64" 2>/dev/null && return 0
    sleep 0.5
  done
  die "the file server for dstack's binaries did not answer; log: $STATE/files.log"
}

write_standins() {
  mkdir -p "$STATE/standins"
  cat >"$STATE/standins/sudo" <<'EOF'
#!/bin/sh
# Stand-in for sudo on a machine where everything already runs as root: drop options, run the rest.
while [ $# -gt 0 ]; do case "$1" in -*) shift ;; *) break ;; esac; done
exec "$@"
EOF
  cat >"$STATE/standins/systemctl" <<EOF
#!/bin/bash
# Stand-in for systemctl without systemd: runs the one unit dstack's provisioning installs.
STATE="$STATE"
EOF
  cat >>"$STATE/standins/systemctl" <<'EOF'
set -u
verb=""; unit=""
for arg in "$@"; do
  case "$arg" in
    -*) ;;
    *) if [ -z "$verb" ]; then verb="$arg"; elif [ -z "$unit" ]; then unit="${arg%.service}"; fi ;;
  esac
done
file="/etc/systemd/system/$unit.service"
pidfile="$STATE/$unit.pid"
value() { sed -n "s/^$1=//p" "$file" | tail -n 1; }
running() { [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; }
stop() {
  if running; then
    pid="$(cat "$pidfile")"
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid"
    for _ in $(seq 1 20); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
    kill -KILL -- "-$pid" 2>/dev/null || true
  fi
  rm -f "$pidfile"
}
start() {
  running && return 0
  [ -f "$file" ] || { echo "systemctl (stand-in): $file not found" >&2; exit 5; }
  (
    cd "$(value WorkingDirectory || echo /)" 2>/dev/null || cd /
    envfile="$(value EnvironmentFile)"; envfile="${envfile#-}"
    if [ -n "$envfile" ] && [ -f "$envfile" ]; then set -a; . "$envfile"; set +a; fi
    setsid nohup sh -c "exec $(value ExecStart)" >"$STATE/$unit.log" 2>&1 </dev/null &
    echo $! >"$pidfile"
  )
}
case "$verb" in
  daemon-reload|enable|disable) exit 0 ;;
  start) start ;;
  restart) stop; start ;;
  stop) stop ;;
  is-active) running && { echo active; exit 0; }; echo inactive; exit 3 ;;
  status)
    if running; then echo "● $unit.service"; echo "   Active: active (running)"; exit 0; fi
    echo "● $unit.service"; echo "   Active: inactive (dead)"; exit 3 ;;
  *) echo "systemctl (stand-in): \`$verb\` is not supported" >&2; exit 1 ;;
esac
EOF
  chmod +x "$STATE/standins/sudo" "$STATE/standins/systemctl"
}

ensure_sshd() {
  mkdir -p "$STATE/ssh" /run/sshd
  [ -f "$STATE/ssh/host_ed25519" ] || ssh-keygen -q -t ed25519 -N '' -f "$STATE/ssh/host_ed25519"
  [ -f "$STATE/ssh/fleet_ed25519" ] || ssh-keygen -q -t ed25519 -N '' -C autodebug-dstack-fleet -f "$STATE/ssh/fleet_ed25519"
  cp "$STATE/ssh/fleet_ed25519.pub" "$STATE/ssh/authorized_keys"
  chmod 600 "$STATE/ssh/authorized_keys"
  write_standins
  cat >"$STATE/ssh/sshd_config" <<EOF
ListenAddress 127.0.0.1
Port $SSH_PORT
HostKey $STATE/ssh/host_ed25519
PidFile $STATE/sshd.pid
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
# The fleet's own key, and the project key dstack's provisioning appends to root's file.
AuthorizedKeysFile $STATE/ssh/authorized_keys .ssh/authorized_keys
AllowTcpForwarding yes
Subsystem sftp internal-sftp
SetEnv PATH=$STATE/standins:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
EOF
  if alive "$STATE/sshd.pid"; then
    kill -HUP "$(cat "$STATE/sshd.pid")"
  else
    /usr/sbin/sshd -f "$STATE/ssh/sshd_config" -E "$STATE/sshd.log" 9>&- \
      || die "sshd did not start on 127.0.0.1:$SSH_PORT; log: $STATE/sshd.log"
  fi
  for _ in $(seq 1 20); do
    if ssh -q -o BatchMode=yes -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null \
        -i "$STATE/ssh/fleet_ed25519" -p "$SSH_PORT" root@127.0.0.1 'command -v systemctl' 2>/dev/null \
        | grep -q "$STATE/standins"; then
      return 0
    fi
    sleep 0.5
  done
  die "cannot log in to the fleet's sshd on 127.0.0.1:$SSH_PORT with the stand-ins on PATH; log: $STATE/sshd.log"
}

snapshot_outside_files() {
  # What `down` must restore: the authorized_keys lines and whether ~/.dstack existed before provisioning.
  [ -f "$STATE/outside.recorded" ] && return 0
  if [ -f "$HOME/.ssh/authorized_keys" ]; then
    cp "$HOME/.ssh/authorized_keys" "$STATE/authorized_keys.before"
  else
    : >"$STATE/authorized_keys.before"
    echo absent >"$STATE/authorized_keys.absent"
  fi
  [ -e "$HOME/.dstack" ] || echo absent >"$STATE/dstack-home.absent"
  # Provisioning backs the file up before appending to it.
  [ -e "$HOME/.ssh/authorized_keys.bak" ] || echo absent >"$STATE/authorized_keys_bak.absent"
  [ -e "$HOME/.ssh" ] || echo absent >"$STATE/ssh-dir.absent"
  touch "$STATE/outside.recorded"
}

server() {
  AUTODEBUG_DSTACK_STATE="$SERVER_STATE" \
    DSTACK_SHIM_DOWNLOAD_URL="$(cat "$STATE/files.url")/dstack-shim-linux-{arch}" \
    DSTACK_RUNNER_DOWNLOAD_URL="$(cat "$STATE/files.url")/dstack-runner-linux-{arch}" \
    bash "$HERE/dstack-server.sh" "$@"
}

dstack_cli() {
  HOME="$SERVER_STATE/home" "${AUTODEBUG_DSTACK_VENV:-$CACHE/dstack-venv}/bin/dstack" "$@"
}

# api PATH BODY: POST to the fleet's server, PATH relative to /api/ (project routes name the project).
api() {
  local url token
  url="$(sed -n 's/^DSTACK_SERVER_URL=//p' "$STATE/lines")"
  token="$(sed -n 's/^DSTACK_TOKEN=//p' "$STATE/lines")"
  curl -fsS -m 10 -X POST "$url/api/$1" -H "Authorization: Bearer $token" \
    -H 'Content-Type: application/json' -d "$2"
}

fleet_idle() {
  api project/main/fleets/get "{\"name\":\"$FLEET\"}" 2>/dev/null | "$PYTHON" -c '
import json, sys
fleet = json.load(sys.stdin)
statuses = [i.get("status") for i in fleet.get("instances", [])]
sys.exit(0 if statuses and all(s in ("idle", "busy") for s in statuses) else 1)' 2>/dev/null
}

ensure_fleet() {
  fleet_idle && return 0
  cat >"$STATE/fleet.dstack.yml" <<EOF
type: fleet
name: $FLEET
ssh_config:
  user: root
  port: $SSH_PORT
  identity_file: $STATE/ssh/fleet_ed25519
  hosts:
    - 127.0.0.1
EOF
  say "applying the SSH fleet $FLEET on 127.0.0.1:$SSH_PORT"
  (cd "$STATE" && dstack_cli apply -f "$STATE/fleet.dstack.yml" -y --detach >"$STATE/fleet-apply.log" 2>&1) \
    || { tail -n 20 "$STATE/fleet-apply.log" >&2; die "dstack apply of the fleet failed; log: $STATE/fleet-apply.log"; }
  local deadline=$((SECONDS + WAIT_S))
  until fleet_idle; do
    if [ $SECONDS -ge $deadline ]; then
      api project/main/fleets/get "{\"name\":\"$FLEET\"}" >&2 || true
      die "the fleet did not become idle within ${WAIT_S}s; logs: $SERVER_STATE/server.log, $STATE/dstack-shim.log"
    fi
    sleep 2
  done
}

ensure_volume() {
  # What the example service mounts: the llama-server binary and the SmolLM2 GGUF, hard-linked from
  # the caches scripts/llama-server.sh fills (copied where a hard link cannot be made).
  mkdir -p "$DIR/volume/models"
  local src dst
  for pair in "$CACHE/llama-server:$DIR/volume/llama-server" \
              "$CACHE/models/SmolLM2-135M-Instruct.Q4_1.gguf:$DIR/volume/models/SmolLM2-135M-Instruct.Q4_1.gguf"; do
    src="${pair%%:*}"; dst="${pair#*:}"
    if [ ! -e "$src" ]; then
      say "$src is missing: run scripts/llama-server.sh first for the llama.cpp service"
      continue
    fi
    if [ ! "$dst" -ef "$src" ]; then
      rm -f "$dst"
      ln "$src" "$dst" 2>/dev/null || cp "$src" "$dst"
    fi
  done
}

up() {
  [ "$(id -u)" = 0 ] || cannot_run "needs root (installs packages, runs dockerd and an sshd)"
  mkdir -p "$STATE"
  exec 9>"$DIR/lock"
  flock -w 900 9 || die "timed out waiting for another dstack-fleet.sh holding $DIR/lock"
  local started=$SECONDS
  ensure_packages
  ensure_dockerd
  ensure_image
  ensure_binaries
  ensure_file_server
  snapshot_outside_files
  ensure_sshd
  if ! server status >/dev/null 2>&1; then
    # The server's database would still list a fleet whose shim died with the last session or boot:
    # start from a clean state, so the fleet is provisioned afresh (~15 s).
    stop_shim_and_containers
    rm -rf "$SERVER_STATE/home/.dstack/server"
  fi
  server start >"$STATE/lines.partial" 9>&- || die "the dstack server did not start (scripts/dstack-server.sh)"
  mv "$STATE/lines.partial" "$STATE/lines"
  ensure_fleet
  ensure_volume
  say "fleet up in $((SECONDS - started)) s"
  print_lines
}

print_lines() {
  grep -E '^DSTACK_(SERVER_URL|TOKEN|PROJECT)=' "$STATE/lines"
  echo "DSTACK_FLEET=$FLEET"
  echo "AUTODEBUG_DSTACK_IMAGE=$IMAGE"
  echo "AUTODEBUG_DSTACK_VOLUME=$DIR/volume"
  echo "AUTODEBUG_DSTACK_CLI=${AUTODEBUG_DSTACK_VENV:-$CACHE/dstack-venv}/bin/dstack"
}

status() {
  [ -f "$STATE/lines" ] && alive "$STATE/sshd.pid" && server status >/dev/null && fleet_idle || return 1
  print_lines
}

stop_shim_and_containers() {
  if [ -x "$STATE/standins/systemctl" ]; then "$STATE/standins/systemctl" stop dstack-shim || true; fi
  # Every container the shim started runs the fleet's image.
  local containers
  containers="$(docker ps -aq --filter "ancestor=$IMAGE" 2>/dev/null || true)"
  [ -z "$containers" ] || docker rm -f $containers >/dev/null 2>&1 || true
}

down() {
  mkdir -p "$STATE"
  exec 9>"$DIR/lock"
  flock -w 900 9 || die "timed out waiting for another dstack-fleet.sh holding $DIR/lock"
  if [ -f "$STATE/lines" ] && server status >/dev/null 2>&1; then
    # Stop every run of the project, then delete the fleet, so no container outlives the server.
    local runs
    runs="$(api runs/list '{"project_name":"main","only_active":true,"limit":100}' 2>/dev/null | "$PYTHON" -c '
import json, sys
print(json.dumps([r["run_spec"]["run_name"] for r in json.load(sys.stdin)]))' || echo '[]')"
    [ "$runs" = "[]" ] || api project/main/runs/stop "{\"runs_names\":$runs,\"abort\":true}" >/dev/null 2>&1 || true
    api project/main/fleets/delete "{\"names\":[\"$FLEET\"]}" >/dev/null 2>&1 || true
  fi
  server stop 2>/dev/null || true
  stop_shim_and_containers
  stop_pidfile "$STATE/sshd.pid"
  stop_pidfile "$STATE/files.pid"
  rm -f "${PROVISIONED[@]}"
  if [ -f "$STATE/outside.recorded" ]; then
    if [ -f "$STATE/authorized_keys.absent" ]; then
      rm -f "$HOME/.ssh/authorized_keys"
    elif [ -f "$HOME/.ssh/authorized_keys" ]; then
      # Keep exactly the lines that were there before `up`.
      grep -Fxf "$STATE/authorized_keys.before" "$HOME/.ssh/authorized_keys" >"$STATE/authorized_keys.after" || true
      cat "$STATE/authorized_keys.after" >"$HOME/.ssh/authorized_keys"
    fi
    [ -f "$STATE/dstack-home.absent" ] && rm -rf "$HOME/.dstack"
    [ -f "$STATE/authorized_keys_bak.absent" ] && rm -f "$HOME/.ssh/authorized_keys.bak"
    [ -f "$STATE/ssh-dir.absent" ] && rmdir "$HOME/.ssh" 2>/dev/null || true
    rm -f "$STATE/outside.recorded" "$STATE/authorized_keys."* "$STATE/authorized_keys_bak.absent" "$STATE/dstack-home.absent" "$STATE/ssh-dir.absent"
  fi
  if [ -f "$STATE/dockerd.pid" ]; then stop_pidfile "$STATE/dockerd.pid"; fi
  rm -f "$STATE/lines"
  say "fleet down"
}

case "${1:-up}" in
  up) up ;;
  down) down ;;
  status) status ;;
  env) status | sed 's/^/export /' ;;
  *) die "unknown command \`$1\`: use up, down, status or env" ;;
esac
