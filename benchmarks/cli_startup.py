"""How fast the commands answer ``--help`` and ``--cfg job`` (what shell completion and a newcomer's first try
cost), optionally against another checkout of genarena on the same machine in the same run.

    python benchmarks/cli_startup.py                                  # this checkout
    python benchmarks/cli_startup.py --reference <other checkout>     # and a reference, alternating, with ratios

Each command runs as a fresh process (``python -c "... main()"``) ``--repeats`` times; the reference (another
work tree, e.g. ``git worktree add /tmp/old <commit>``) runs with its ``src/`` first on ``PYTHONPATH``.
Writes ``benchmarks/cli_startup.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
COMMANDS = {  # name -> (module, argv)
    "genarena-train --help": ("genarena.cli.train", ["--help"]),
    "genarena-train --cfg job": ("genarena.cli.train", ["--cfg", "job", "task=generator", "generator=var"]),
    "genarena-sample --help": ("genarena.cli.sample", ["--help"]),
    "genarena-eval --help": ("genarena.cli.evaluate", ["--help"]),
    "genarena-compare --help": ("genarena.cli.compare", ["--help"]),
}


def time_command(module: str, argv: list[str], src: Path | None) -> float:
    code = (f"import sys; sys.argv = ['x', *{argv!r}]\nfrom {module} import main\n"
            "try:\n    main()\nexcept SystemExit:\n    pass")
    env = dict(os.environ)
    if src is not None:
        env["PYTHONPATH"] = str(src)
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=HERE)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{module} {' '.join(argv)} failed:\n{proc.stderr[-2000:]}")
    return elapsed


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--reference", type=Path, help="another genarena checkout to time the same commands against")
    p.add_argument("--reference-name", default="reference", help="how the report names the reference")
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args()
    sides = {"this checkout": None}
    if args.reference:
        sides[args.reference_name] = args.reference.resolve() / "src"
    times: dict[str, dict[str, list[float]]] = {c: {s: [] for s in sides} for c in COMMANDS}
    for _ in range(args.repeats):  # alternate the sides so that machine noise hits both alike
        for command, (module, argv) in COMMANDS.items():
            for side, src in sides.items():
                times[command][side].append(time_command(module, argv, src))
    rows = []
    for command, per_side in times.items():
        row = {"command": command, **{f"{s}_median_s": statistics.median(v) for s, v in per_side.items()},
               **{f"{s}_min_s": min(v) for s, v in per_side.items()}}
        if args.reference:
            row["speedup_median"] = row[f"{args.reference_name}_median_s"] / row["this checkout_median_s"]
            row["speedup_min"] = row[f"{args.reference_name}_min_s"] / row["this checkout_min_s"]
        rows.append(row)
    meta = {"repeats": args.repeats, "python": platform.python_version(), "machine": platform.machine(),
            "cpus": os.cpu_count(), "reference": args.reference_name if args.reference else None}
    (HERE / "cli_startup.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    lines = ["# Command start-up: `--help` and `--cfg job`", "",
             f"Fresh process per call, {args.repeats} calls per command and side, sides alternating; "
             f"{meta['cpus']} CPU cores, Python {meta['python']}. Re-run: `python benchmarks/cli_startup.py"
             + (" --reference <checkout>`." if args.reference else "`."), ""]
    if args.reference:
        lines += [f"| command | {args.reference_name} median s | this checkout median s | speed-up (median) | "
                  "speed-up (min) |", "|---|---|---|---|---|"]
        lines += [f"| `{r['command']}` | {r[args.reference_name + '_median_s']:.2f} | {r['this checkout_median_s']:.2f}"
                  f" | {r['speedup_median']:.1f}x | {r['speedup_min']:.1f}x |" for r in rows]
    else:
        lines += ["| command | median s | min s |", "|---|---|---|"]
        lines += [f"| `{r['command']}` | {r['this checkout_median_s']:.2f} | {r['this checkout_min_s']:.2f} |"
                  for r in rows]
    (HERE / "cli_startup.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
