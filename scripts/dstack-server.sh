#!/usr/bin/env bash
# Starts a real dstack server on loopback for autodebug's dstack deployer tests.
#
#   scripts/dstack-server.sh [start]   install dstack[server] if missing, start (or reuse) a server,
#                                      print DSTACK_SERVER_URL=..., DSTACK_TOKEN=..., DSTACK_PROJECT=...
#   scripts/dstack-server.sh install   only create the venv; print its path
#   scripts/dstack-server.sh stop      stop the server this script started
#   scripts/dstack-server.sh status    print the running server's lines, or exit 1
#
# Idempotent: a second `start` reuses the running server. Every wait is bounded.
# The server runs with HOME pointed at its own state directory, so it never touches the
# user's ~/.dstack; the config.yml it writes there is a real dstack client config.
#
# Exit status: 0 ok, 3 dstack cannot be installed here (no python3 venv or no network), 1 other errors.
#
# Environment:
#   AUTODEBUG_DSTACK_VENV     venv path        (default ~/.cache/autodebug/dstack-venv)
#   AUTODEBUG_DSTACK_STATE    server state dir (default ~/.cache/autodebug/dstack-server)
#   AUTODEBUG_DSTACK_VERSION  dstack version   (default 0.22.5)
#   AUTODEBUG_DSTACK_WAIT_S   seconds to wait for the server to answer (default 120)
#   DSTACK_SERVER_ADMIN_TOKEN admin token      (default: generated once and kept in the state dir)
set -euo pipefail

CACHE="${XDG_CACHE_HOME:-$HOME/.cache}/autodebug"
VENV="${AUTODEBUG_DSTACK_VENV:-$CACHE/dstack-venv}"
STATE="${AUTODEBUG_DSTACK_STATE:-$CACHE/dstack-server}"
VERSION="${AUTODEBUG_DSTACK_VERSION:-0.22.5}"
WAIT_S="${AUTODEBUG_DSTACK_WAIT_S:-120}"
INSTALL_TIMEOUT_S="${AUTODEBUG_DSTACK_INSTALL_TIMEOUT_S:-900}"
PYTHON="${PYTHON:-python3}"

die() { echo "dstack-server.sh: $*" >&2; exit 1; }
# Exit status 3 means "dstack cannot be installed here" (no Python venv, no network): tests skip on it.
cannot_install() { echo "dstack-server.sh: $*" >&2; exit 3; }

# dstack 0.22.5 asks for sentry-sdk without an upper bound; sentry-sdk 3 (3.0.1 on PyPI here in 2026-12) dropped
# `start_transaction`, which the server's background pipelines call on every pass, so with it no
# fleet instance ever leaves `pending` ("module 'sentry_sdk' has no attribute 'start_transaction'"
# in server.log). The pin is part of the marker, so a venv installed without it is redone.
PINS=("sentry-sdk[fastapi]<3")
MARKER="$VERSION ${PINS[*]}"

install_venv() {
  # The marker is written last, so an interrupted install is redone rather than trusted.
  if [ "$(cat "$VENV/.autodebug-installed" 2>/dev/null)" = "$MARKER" ] && [ -x "$VENV/bin/dstack" ]; then
    return 0
  fi
  command -v "$PYTHON" >/dev/null || cannot_install "$PYTHON not found; install Python 3.9+ or set PYTHON"
  rm -rf "$VENV"
  mkdir -p "$(dirname "$VENV")"
  local started=$SECONDS
  echo "dstack-server.sh: installing dstack[server]==$VERSION into $VENV (one time, about a minute)" >&2
  "$PYTHON" -m venv "$VENV" || { rm -rf "$VENV"; cannot_install "could not create a venv with $PYTHON -m venv (on Debian: apt-get install python3-venv)"; }
  if ! timeout "$INSTALL_TIMEOUT_S" "$VENV/bin/pip" install --quiet --disable-pip-version-check \
      "dstack[server]==$VERSION" "${PINS[@]}" >&2; then
    rm -rf "$VENV"
    cannot_install "pip install dstack[server]==$VERSION failed (no network or PyPI unreachable?)"
  fi
  echo "$MARKER" >"$VENV/.autodebug-installed"
  echo "dstack-server.sh: installed in $((SECONDS - started))s; venv size $(du -sh "$VENV" | cut -f1)" >&2
}

server_answers() {
  # get_info needs no auth; any answer from it means the API is up.
  curl -fsS -m 3 -X POST "$1/api/server/get_info" -H 'Content-Type: application/json' -d '{}' >/dev/null 2>&1
}

print_lines() {
  echo "DSTACK_SERVER_URL=$(cat "$STATE/url")"
  echo "DSTACK_TOKEN=$(cat "$STATE/token")"
  echo "DSTACK_PROJECT=main"
  echo "DSTACK_SERVER_PID=$(cat "$STATE/pid")"
  echo "DSTACK_HOME=$STATE/home"
}

running() {
  [ -f "$STATE/pid" ] && [ -f "$STATE/url" ] && kill -0 "$(cat "$STATE/pid")" 2>/dev/null \
    && server_answers "$(cat "$STATE/url")"
}

free_port() {
  "$PYTHON" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

start() {
  command -v curl >/dev/null || die "curl not found; it is used to check the server answers"
  mkdir -p "$STATE"
  # One starter at a time (parallel test binaries share the server). The server closes this
  # descriptor, or it would hold the lock for its whole life and block every later start.
  exec 9>"$STATE/lock"
  flock -w "$((WAIT_S + 60))" 9 || die "timed out waiting for another dstack-server.sh holding $STATE/lock"
  if running; then
    print_lines
    return 0
  fi
  install_venv
  if [ -f "$STATE/pid" ]; then
    kill "$(cat "$STATE/pid")" 2>/dev/null || true
    rm -f "$STATE/pid"
  fi
  local token="${DSTACK_SERVER_ADMIN_TOKEN:-}"
  if [ -z "$token" ]; then
    [ -s "$STATE/token" ] || "$PYTHON" -c 'import uuid; print(uuid.uuid4())' >"$STATE/token"
    token="$(cat "$STATE/token")"
  fi
  printf '%s\n' "$token" >"$STATE/token"
  chmod 600 "$STATE/token"
  local port url
  port="$(free_port)"
  url="http://127.0.0.1:$port"
  mkdir -p "$STATE/home"
  (
    cd "$STATE"
    HOME="$STATE/home" DSTACK_SERVER_DIR="$STATE/home/.dstack/server" \
      DSTACK_SERVER_ADMIN_TOKEN="$token" DSTACK_SERVER_LOG_LEVEL=WARNING \
      DSTACK_SERVER_LOG_FORMAT=standard \
      setsid nohup "$VENV/bin/dstack" server --host 127.0.0.1 --port "$port" --yes \
      >"$STATE/server.log" 2>&1 </dev/null 9>&- &
    echo $! >"$STATE/pid"
  )
  echo "$url" >"$STATE/url"
  local deadline=$((SECONDS + WAIT_S))
  until server_answers "$url"; do
    if ! kill -0 "$(cat "$STATE/pid")" 2>/dev/null; then
      tail -n 30 "$STATE/server.log" >&2 || true
      die "dstack server exited during start; log: $STATE/server.log"
    fi
    [ $SECONDS -lt $deadline ] || die "dstack server did not answer at $url within ${WAIT_S}s; log: $STATE/server.log"
    sleep 1
  done
  print_lines
}

stop() {
  [ -f "$STATE/pid" ] || { echo "dstack-server.sh: no server recorded in $STATE" >&2; return 0; }
  local pid
  pid="$(cat "$STATE/pid")"
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 20); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
    kill -KILL -- "-$pid" 2>/dev/null || true
  fi
  rm -f "$STATE/pid" "$STATE/url"
}

case "${1:-start}" in
  start) start ;;
  install) install_venv; echo "$VENV" ;;
  stop) stop ;;
  status) running && print_lines ;;
  *) die "unknown command \`$1\`: use start, install, stop or status" ;;
esac
