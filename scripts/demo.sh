#!/usr/bin/env bash
# Set up (cached) and run the main job: the pick scene on the simulated cell.
# Starts the whole node graph in one process (launch-free bring-up: simulated
# camera, arm and gripper; segmentation; ZeroGrasp; refinement; execution;
# visualisation; the live 3D view in a browser), prints the view's URL, then
# clears the table with /pick. Output: demo_output/ (summary.json,
# prediction.png, bringup.log).
#   --serve   keep the graph and the browser view running after the demo, until Ctrl-C
# Other arguments go to the demo client, e.g. `scripts/demo.sh --max-picks 3 --seed 11`.
# Env: ZEROGRASP_WEB_PORT (default 8080; a busy port moves to the next free one).
set -euo pipefail
# shellcheck disable=SC1091
source "$(dirname "${BASH_SOURCE[0]}")/prelude.sh"
OUT="${ZEROGRASP_DEMO_OUT:-$REPO/demo_output}"
mkdir -p "$OUT"
SERVE=0
CLIENT_ARGS=()
for arg in "$@"; do
  if [ "$arg" = "--serve" ]; then SERVE=1; else CLIENT_ARGS+=("$arg"); fi
done
# A domain of its own (the tests use 1-200).
export ROS_DOMAIN_ID="${ROS_DOMAIN_ID:-$((201 + RANDOM % 30))}"
LIB="$REPO/.ws/install/zerograsp_ros/lib/zerograsp_ros"
echo "[demo] starting the node graph (log: $OUT/bringup.log, ROS_DOMAIN_ID=$ROS_DOMAIN_ID)"
"$LIB/bringup" --web-view --web-port "${ZEROGRASP_WEB_PORT:-8080}" > "$OUT/bringup.log" 2>&1 &
BRINGUP=$!
trap 'kill -INT $BRINGUP 2>/dev/null; wait $BRINGUP 2>/dev/null || true' EXIT
# The view prints its URL once it listens (the port it got, if 8080 was taken).
URL=""
for _ in $(seq 1 600); do
  URL="$(grep -o 'open http://[^ ]* in a browser' "$OUT/bringup.log" 2>/dev/null | head -1 | cut -d' ' -f2 || true)"
  [ -n "$URL" ] && break
  kill -0 $BRINGUP 2>/dev/null || break
  sleep 0.5
done
if [ -n "$URL" ]; then
  echo "[demo] live 3D view: $URL (open it in a browser on this machine)"
else
  echo "[demo] the web view did not start; see $OUT/bringup.log" >&2
fi
set +e
"$LIB/pick_scene_demo" --seed 3 --out "$OUT" "${CLIENT_ARGS[@]}"
code=$?
set -e
if ! kill -0 $BRINGUP 2>/dev/null; then
  echo "[demo] the node graph exited early; last lines of $OUT/bringup.log:" >&2
  tail -20 "$OUT/bringup.log" >&2
fi
echo "[demo] summary: $OUT/summary.json  figure: $OUT/prediction.png"
if [ "$SERVE" = 1 ] && kill -0 $BRINGUP 2>/dev/null; then
  echo "[demo] serving ${URL:-the graph} until Ctrl-C"
  trap 'echo; echo "[demo] stopping"' INT
  wait $BRINGUP || true
  trap - INT
fi
exit $code
