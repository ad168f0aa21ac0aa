#!/usr/bin/env bash
# Set up (cached) and run the whole test suite. Extra arguments go to pytest,
# e.g. `scripts/test.sh -k refinement`, `scripts/test.sh test/test_sim.py`.
set -euo pipefail
# shellcheck disable=SC1091
source "$(dirname "${BASH_SOURCE[0]}")/prelude.sh"
# Tests import the colcon-installed package, i.e. what `ros2 run` users get.
export PYTHONDONTWRITEBYTECODE=1 MPLBACKEND=Agg
# Tests start several node processes on 2 cores: one OpenMP thread each avoids
# oversubscription (measured 2-20x slower torch steps with the default).
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
# Default to the whole suite; `scripts/test.sh test/test_x.py` runs only that file.
for arg in "$@"; do
    if [[ "$arg" != -* && -e "${arg%%::*}" ]]; then
        exec "$ZEROGRASP_VENV/bin/pytest" "$@"
    fi
done
exec "$ZEROGRASP_VENV/bin/pytest" test "$@"
