#!/usr/bin/env bash
# Loads an HTML page (e.g. an `autodebug report`) in headless Chromium and checks that it
# renders: no console messages or uncaught errors, a DOM with SVG charts, and a screenshot
# that is not blank. The Rust tests do the same through autodebug_report::Chromium; this is
# for people and CI logs.
#
#   scripts/chromium-check.sh report.html [screenshot.png]
#
# Exit codes: 0 ok, 1 the page failed a check, 2 usage, 3 Chromium missing (skip).
set -euo pipefail

page="${1:?usage: scripts/chromium-check.sh PAGE.html [SCREENSHOT.png]}"
shot="${2:-${page%.*}.png}"
chromium="${AUTODEBUG_CHROMIUM:-/usr/bin/chromium}"
if [[ ! -x "$chromium" ]]; then
    echo "SKIPPED: $chromium not found (apt-get install chromium, or set AUTODEBUG_CHROMIUM)" >&2
    exit 3
fi
[[ -f "$page" ]] || { echo "no such page: $page" >&2; exit 2; }
page_url="file://$(realpath "$page")"
profile="$(mktemp -d)"
trap 'rm -rf "$profile"' EXIT
flags=(--headless --no-sandbox --disable-gpu --disable-background-networking --disable-component-update
       --disable-sync --no-first-run --no-default-browser-check --enable-logging=stderr --v=0
       --user-data-dir="$profile")

dom="$(timeout 90 "$chromium" "${flags[@]}" --dump-dom "$page_url" 2>"$profile/dom.log")"
timeout 90 "$chromium" "${flags[@]}" --hide-scrollbars --window-size=1280,2400 \
    --screenshot="$(realpath -m "$shot")" "$page_url" 2>"$profile/shot.log" >/dev/null

status=0
if grep -hE 'CONSOLE|Uncaught' "$profile/dom.log" "$profile/shot.log"; then
    echo "FAIL: the page wrote to the console (above)" >&2
    status=1
fi
charts="$(grep -o '<svg' <<<"$dom" | wc -l || true)"
if (( charts == 0 )); then
    echo "FAIL: the rendered DOM holds no <svg> chart" >&2
    status=1
fi
size="$(stat -c %s "$shot" 2>/dev/null || echo 0)"
# A blank 1280x2400 page compresses to a few kB; one with charts and text is far larger.
if (( size < 50000 )); then
    echo "FAIL: screenshot $shot is $size bytes: blank or missing" >&2
    status=1
fi
echo "$page: $charts charts in the DOM, screenshot $shot ($size bytes)"
exit "$status"
