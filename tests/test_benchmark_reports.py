"""The committed benchmark reports are what their scripts render from the committed results: each ``.md`` in
``benchmarks/`` is regenerated from its ``.json`` and must match, so a figure, a floor verdict or a ratio in a report
cannot drift from the measurement (or be edited by hand) without this failing."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def script(name: str):
    spec = importlib.util.spec_from_file_location(f"benchmark_{name}", BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("name", ["vs_official", "official_architectures"])
def test_a_committed_report_is_its_json_rendered(name, tmp_path):
    shutil.copy(BENCHMARKS / f"{name}.json", tmp_path / f"{name}.json")
    script(name).write_report(tmp_path, json.loads((BENCHMARKS / f"{name}.json").read_text()))
    assert (tmp_path / f"{name}.md").read_text() == (BENCHMARKS / f"{name}.md").read_text()


@pytest.mark.parametrize("name", ["mar_samplers", "editing"])
def test_a_committed_table_is_its_json_rendered(name):
    result = json.loads((BENCHMARKS / f"{name}.json").read_text())
    assert script(name).markdown(result) + "\n" == (BENCHMARKS / f"{name}.md").read_text()


def test_vs_official_floor_verdicts_follow_the_ratios(tmp_path):
    results = json.loads((BENCHMARKS / "vs_official.json").read_text())
    case = next(c for c in results["cases"] if c.startswith("VAR sampling"))
    results["cases"][case]["ratio_median"] = 0.71  # just above the 0.7 floor
    script("vs_official").write_report(tmp_path, results)
    row = next(line for line in (tmp_path / "vs_official.md").read_text().splitlines() if line.startswith(f"| {case}"))
    assert row.endswith("<= 0.7: NOT met |")


def test_mar_samplers_variants_are_checked():
    mod = script("mar_samplers")
    assert mod.parse_variant("ddim:25:0") == {"sampler": "ddim", "diffusion_steps": 25, "eta": 0.0}
    assert mod.parse_variant("ddpm:100") == {"sampler": "ddpm", "diffusion_steps": 100}
    for bad, message in (("euler:10", "sampler:steps"), ("ddim:0", "sampler:steps"), ("ddim", "sampler:steps"),
                         ("ddpm:25:1", "eta applies to ddim only")):
        with pytest.raises(SystemExit, match=message):
            mod.parse_variant(bad)
