# Sourced by demo.sh and test.sh: set up (cached), enter the environment, cd to the repository.
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$REPO/scripts/setup.sh"
# colcon's setup scripts read unset variables: source them without -u.
set +u
# shellcheck disable=SC1091
source "$REPO/.ws/env.sh"
set -u
cd "$REPO"
