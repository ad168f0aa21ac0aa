"""Python style: ruff with the ament_flake8 / ament_pep257 rule set (ruff.toml)."""
from pathlib import Path
import shutil
import subprocess
import sys

REPO = Path(__file__).resolve().parents[1]


def test_ruff_clean():
    ruff = shutil.which('ruff') or str(Path(sys.executable).with_name('ruff'))
    result = subprocess.run([ruff, 'check', '--no-cache', '.'], cwd=REPO,
                            capture_output=True, text=True)
    assert result.returncode == 0, f'ruff found problems:\n{result.stdout}{result.stderr}'
