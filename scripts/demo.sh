#!/usr/bin/env bash
# Set up (cached) and run the main job: the pick scene on the simulated cell.
# Starts the whole node graph in one process (launch-free bring-up: simulated
# camera, arm and gripper; segmentation; ZeroGrasp; refinement; execution;
# visualisation), then clears the table with /pick. Output: demo_output/
# (summary.json, prediction.png, bringup.log). Extra arguments go to the demo
# client, e.g. `scripts/demo.sh --max-picks 3 --seed 11`.
set -euo pipefail
# shellcheck disable=SC1091
source "$(dirname "${BASH_SOURCE[0]}")/prelude.sh"
OUT="${ZEROGRASP_DEMO_OUT:-$REPO/demo_output}"
mkdir -p "$OUT"
# A domain of its own (the tests use 1-200).
export ROS_DOMAIN_ID="${ROS_DOMAIN_ID:-$((201 + RANDOM % 30))}"
LIB="$REPO/.ws/install/zerograsp_ros/lib/zerograsp_ros"
echo "[demo] starting the node graph (log: $OUT/bringup.log, ROS_DOMAIN_ID=$ROS_DOMAIN_ID)"
"$LIB/bringup" > "$OUT/bringup.log" 2>&1 &
BRINGUP=$!
trap 'kill -INT $BRINGUP 2>/dev/null; wait $BRINGUP 2>/dev/null || true' EXIT
set +e
"$LIB/pick_scene_demo" --seed 3 --out "$OUT" "$@"
code=$?
set -e
if ! kill -0 $BRINGUP 2>/dev/null; then
  echo "[demo] the node graph exited early; last lines of $OUT/bringup.log:" >&2
  tail -20 "$OUT/bringup.log" >&2
fi
echo "[demo] summary: $OUT/summary.json  figure: $OUT/prediction.png"
exit $code
