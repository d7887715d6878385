"""The package's shape: no import cycles, imports at module top (a lazy one says why), layers that only
import downwards, and commands that answer --help / --cfg without importing torch or Lightning."""

from __future__ import annotations

import ast
import functools
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "genarena"

# a package may import only from the packages listed for it (and from itself); model code knows no Lightning/Hydra
LAYERS = {
    "tokenizers": {"errors", "config", "checkpoints"},
    "generators": {"errors", "config", "checkpoints", "tokenizers"},
    "data": {"errors", "config", "tokenizers"},
    "metrics": {"errors", "config", "data"},
    "lit": {"errors", "config", "data", "tokenizers", "generators", "image_files", "metrics"},
    "scaling": {"errors", "config", "runs"},
    "official": {"errors", "config", "runs", "checkpoints", "tokenizers", "generators"},
    "training": {"errors", "config", "checkpoints", "runs", "data", "tokenizers", "generators", "lit", "metrics"},
}
NO_FRAMEWORKS = ("tokenizers", "generators")  # plain PyTorch: neither lightning nor hydra
IMPORTS = ("import ", "from ")


@functools.cache
def modules() -> dict[str, Path]:
    out = {}
    for path in sorted(SRC.rglob("*.py")):
        parts = path.relative_to(SRC.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


def imported(node: ast.AST, module: str, is_package: bool) -> list[str]:
    """Absolute module names an import statement names: ``from a import b`` gives ``a.b`` when that is a module
    (importing a submodule of a package being initialised is fine), else ``a``."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    assert isinstance(node, ast.ImportFrom)
    base = node.module or ""
    if node.level:
        package = module.split(".") if is_package else module.split(".")[:-1]
        base = ".".join(package[: len(package) - node.level + 1] + ([base] if base else []))
    known = modules()
    submodules = [f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in known]
    return submodules if len(submodules) == len(node.names) else [base, *submodules]


def top_level_graph() -> dict[str, set[str]]:
    mods = modules()
    graph: dict[str, set[str]] = {}
    for name, path in mods.items():
        tree = ast.parse(path.read_text())
        deps = set()
        for node in tree.body:  # module level only: what importing the module runs
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                deps.update(d for d in imported(node, name, path.name == "__init__.py") if d in mods)
        graph[name] = deps - {name}
    return graph


def test_no_import_cycles():
    graph = top_level_graph()
    state: dict[str, int] = {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for dep in sorted(graph[node]):
            if state.get(dep) == 1:
                cycle = stack[stack.index(dep):] + [dep] if dep in stack else [node, dep]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if dep not in state:
                visit(dep, [*stack, dep])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])


def test_function_level_imports_say_why_they_are_lazy():
    offenders = []
    for path in modules().values():
        lines = path.read_text().splitlines()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                for inner in ast.walk(node):
                    if isinstance(inner, (ast.Import, ast.ImportFrom)):
                        # the reason sits on the import's line or on the first of a block of imports
                        i = inner.lineno - 1
                        while i > 0 and "# lazy:" not in lines[i] and lines[i - 1].lstrip().startswith(IMPORTS):
                            i -= 1
                        if "# lazy:" not in lines[i]:
                            offenders.append(f"{path.relative_to(SRC.parent)}:{inner.lineno}: {lines[i].strip()}")
    assert not offenders, "function-level imports without a `# lazy: <reason>` comment:\n" + "\n".join(offenders)


@pytest.mark.parametrize("package", sorted(LAYERS))
def test_packages_import_only_lower_layers(package):
    mods = modules()
    allowed = LAYERS[package] | {package}
    bad = []
    for name, path in mods.items():
        if not (name == f"genarena.{package}" or name.startswith(f"genarena.{package}.")):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                for dep in imported(node, name, path.name == "__init__.py"):
                    top = dep.split(".")
                    if top[0] == "genarena" and len(top) > 1 and top[1] not in allowed:
                        bad.append(f"{name} imports {dep}")
                    if package in NO_FRAMEWORKS and top[0] in ("lightning", "hydra", "pytorch_lightning"):
                        bad.append(f"{name} imports {dep} (model code is plain PyTorch)")
    assert not bad, "\n".join(sorted(set(bad)))


@pytest.mark.parametrize("command, args", [
    ("train", ["--help"]), ("train", ["--cfg", "job", "task=generator", "generator=mar"]),
    ("sample", ["--help"]), ("edit", ["--help"]), ("eval", ["--help"]), ("compare", ["--help"]),
    ("compare", ["--cfg", "job"]),
    ("import", ["--help"]), ("import", ["--cfg", "job", "model=var"]), ("matrix", ["--help"]),
    ("matrix", ["--cfg", "job"]), ("train", ["--cfg", "job", "+sweep=matrix"]),
])
def test_commands_answer_without_importing_torch_or_lightning(command, args):
    module = {"eval": "evaluate", "import": "import_official"}.get(command, command)
    code = (f"import sys; sys.argv = ['genarena-{command}', *{args!r}]\n"
            f"from genarena.cli.{module} import main\n"
            "try:\n    main()\nexcept SystemExit:\n    pass\n"
            "print('HEAVY', sorted(m for m in ('torch', 'lightning') if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "HEAVY []" in proc.stdout, proc.stdout[-500:]
    printed = "model:" if command == "import" else "task:"
    assert ("Usage" in proc.stdout or "== Config" in proc.stdout) if "--help" in args else printed in proc.stdout


def test_import_genarena_is_light_and_the_api_loads_on_use():
    code = ("import sys, genarena; light = 'torch' not in sys.modules; f = genarena.load; "
            "print(light, callable(f), 'torch' in sys.modules, genarena.__version__)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.stdout.split()[:3] == ["True", "True", "True"], proc.stdout + proc.stderr
