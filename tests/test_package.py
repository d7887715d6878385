"""A real package: the wheel ships conf/, lists every package, and its commands work from any directory."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parents[1]


def test_every_package_is_listed_in_pyproject():
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {".".join(p.parent.relative_to(ROOT / "src").parts) for p in (ROOT / "src").rglob("__init__.py")}
    assert found | {"genarena.conf"} == listed


def test_wheel_ships_the_configs_and_runs_from_another_directory(tmp_path):
    # build from a copy: setuptools writes build/ and *.egg-info next to the sources, which must not dirty the checkout
    source = tmp_path / "source"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(".git", ".venv", "runs", "outputs", ".cache", "build",
                                                                "*.egg-info", "__pycache__", "wandb", "multirun"))
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", str(source), "--no-deps", "--no-build-isolation",
                            "-q", "-w", str(tmp_path / "dist")], capture_output=True, text=True, timeout=600)
    assert build.returncode == 0, build.stderr[-2000:]
    [wheel] = (tmp_path / "dist").glob("genarena-*.whl")
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        shipped = {n.removeprefix("genarena/conf/") for n in names if n.startswith("genarena/conf/")}
        z.extractall(tmp_path / "site")
    expected = {str(p.relative_to(ROOT / "conf")) for p in (ROOT / "conf").rglob("*.yaml")}
    assert expected <= shipped and "genarena/py.typed" in names
    # the installed package, from elsewhere: its own configs, not this checkout's
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "site")}
    code = ("import sys; from genarena.config import config_dir; print('CONF', config_dir()); "
            "sys.argv = ['genarena-train', '--help']; from genarena.cli.train import main; main()")
    proc = subprocess.run([sys.executable, "-c", code], cwd=elsewhere, capture_output=True, text=True, timeout=300,
                          env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f"CONF {tmp_path / 'site' / 'genarena' / 'conf'}" in proc.stdout
    assert "generator: ar, mar, maskgit, var" in proc.stdout and "tokenizer: kl," in proc.stdout
