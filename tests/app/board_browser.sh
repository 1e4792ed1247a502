#!/usr/bin/env bash
# `liandan board` in a real browser: headless Chromium loads the page while a spirals run trains, twice; the DOM
# must list the run and show more chart points the second time. Keeps board.png (a screenshot) in the scratch
# directory under the build dir. Skips when chromium is absent. Every wait is bounded: it never hangs CI.
# Usage: board_browser.sh LIANDAN_BIN SCRATCH_DIR
set -euo pipefail
bin=$1 dir=$2
browser=$(command -v chromium || command -v chromium-browser || true)
if [[ -z "$browser" ]]; then echo "SKIPPED: chromium not installed (scripts/install-deps installs it)"; exit 0; fi
rm -rf "$dir" && mkdir -p "$dir/runs"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

"$bin" train "$(dirname "$0")/../../configs/spirals.toml" --run-dir "$dir/runs/spirals" \
  --set steps=200000 --set log_every=5 --set eval_every=100 --set checkpoint_every=100000 >"$dir/train.log" 2>&1 &
pids+=($!)
for i in $(seq 100); do [[ -s "$dir/runs/spirals/metrics.jsonl" ]] && break; sleep 0.2; done
[[ -s "$dir/runs/spirals/metrics.jsonl" ]] || { echo "FAIL: the run wrote no metrics"; cat "$dir/train.log"; exit 1; }

"$bin" board "$dir/runs" --port 0 >"$dir/board.log" 2>&1 &
pids+=($!)
for i in $(seq 50); do grep -q "http://" "$dir/board.log" && break; sleep 0.1; done
url=$(grep -o "http://[0-9.:]*/" "$dir/board.log" | head -1)
[[ -n "$url" ]] || { echo "FAIL: board did not start"; cat "$dir/board.log"; exit 1; }

chrome() { timeout 60 "$browser" --headless --no-sandbox --disable-gpu --disable-dev-shm-usage --no-first-run \
  --user-data-dir="$dir/chrome" --virtual-time-budget=3000 "$@" 2>>"$dir/chrome.log"; }
points() { grep -o 'id="charts" data-points="[0-9]*"' "$1" | grep -o '[0-9]*"$' | tr -d '"'; }
chrome --dump-dom "$url" >"$dir/dom1.html"
sleep 2
chrome --dump-dom "$url" >"$dir/dom2.html"
chrome --screenshot="$dir/board.png" --window-size=1400,1000 "$url" >/dev/null || true

grep -q 'class="run"' "$dir/dom2.html" || { echo "FAIL: no run listed"; head -c 2000 "$dir/dom2.html"; exit 1; }
grep -q '>spirals<' "$dir/dom2.html" || { echo "FAIL: run 'spirals' not listed"; exit 1; }
grep -q 'st running' "$dir/dom2.html" || { echo "FAIL: run not shown as running"; exit 1; }
p1=$(points "$dir/dom1.html") p2=$(points "$dir/dom2.html")
echo "chart points: first load ${p1:-none}, second ${p2:-none}; screenshot $dir/board.png"
[[ -n "$p1" && -n "$p2" && "$p2" -gt "$p1" ]] || { echo "FAIL: points did not grow"; exit 1; }
echo "1 passed, 0 failed"
