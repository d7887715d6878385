"""The examples run as they are written (a newcomer's first contact with the Python API)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def test_quickstart_runs_end_to_end(workdir):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, str(EXAMPLES / "quickstart.py")], cwd=workdir, capture_output=True,
                          text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "samples: (20, 1, 32, 32) torch.uint8" in proc.stdout
    assert "FID " in proc.stdout and "class accuracy" in proc.stdout
    assert (workdir / "runs").is_dir() and not (Path.cwd() / "outputs").exists()
