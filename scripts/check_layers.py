"""Check the layering of the dicomnode package; exit status 1 with one line per problem, 0 when clean.

    python scripts/check_layers.py

A module may import (at module level) only modules of its own layer or of a layer below it, in this order from
the bottom. The order is the dependency order, so it reads against the flow of a study in places: the SCP (net)
writes into the spool, so net sits above spool/state; analysis calls the inference runtime, so inference sits
below analysis; dicomnode.analysis.run composes the pipelines with results/ and sits above both.

Checked:
  1. no import cycle between modules (module-level imports, a package's __init__ counted as imported with it);
  2. no upward import per LAYERS (module-level and function-level alike; TYPE_CHECKING imports are annotations);
  3. no function-level import of a dicomnode module (the place such imports used to hide cycles); a lazily
     imported third-party library (torch, tensorrt, onnxruntime ...) is left alone;
  4. every module (but __main__) imports in a fresh interpreter;
  5. the running node (dicomnode.node, dicomnode.process, dicomnode.cli) imports neither torch nor `engines`,
     and dicomnode.results.codes imports without matplotlib.
"""
from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "dicomnode"

#: bottom first; a module belongs to the layer of its longest listed prefix
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("base", ("dicomnode", "dicomnode.types", "dicomnode.uids", "dicomnode.labels", "dicomnode.charsets",
              "dicomnode.config", "dicomnode.observe", "dicomnode.demo_data")),
    ("state", ("dicomnode.state",)),
    ("spool", ("dicomnode.spool",)),
    ("net", ("dicomnode.net",)),
    ("studies", ("dicomnode.studies", "dicomnode.routing")),
    ("cmr", ("dicomnode.cmr",)),
    ("inference", ("dicomnode.inference",)),
    ("analysis", ("dicomnode.analysis",)),
    ("results", ("dicomnode.results",)),
    ("study analysis", ("dicomnode.analysis.run",)),
    ("study path", ("dicomnode.study_path",)),
    ("operations", ("dicomnode.dispatch", "dicomnode.retention", "dicomnode.metrics", "dicomnode.roles",
                    "dicomnode.receivers")),
    ("node", ("dicomnode.node", "dicomnode.process", "dicomnode.summary_view", "dicomnode.preflight",
              "dicomnode.degraded")),
    ("commands", ("dicomnode.__main__", "dicomnode.cli", "dicomnode.demo", "dicomnode.inference.cli",
                  "dicomnode.devtools")),
]

#: (importer, imported) -> why it is tolerated for now; each entry is a debt with its owner
KNOWN_UPWARD: dict[tuple[str, str], str] = {}

#: (entry module, forbidden top-level packages)
ENTRY_POINTS = [
    ("dicomnode.node", ("torch", "engines", "tensorrt")),
    ("dicomnode.process", ("torch", "engines", "tensorrt")),
    ("dicomnode.cli", ("torch", "engines", "tensorrt")),
    ("dicomnode.results.codes", ("matplotlib", "torch", "engines")),
]


def modules() -> dict[str, Path]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def layer_of(module: str) -> int:
    best, index = "", -1
    for position, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > len(best):
                best, index = prefix, position
    if index < 0:
        raise KeyError(f"{module} is in no layer: add it to LAYERS in scripts/check_layers.py")
    return index


def imports(module: str, path: Path, known: dict[str, Path]) -> list[tuple[str, str, int]]:
    """(kind, imported dicomnode module or package, line) with kind "top" | "function" | "typing"."""
    tree = ast.parse(path.read_text(), str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: list[tuple[str, str, int]] = []

    def targets(node) -> list[str]:
        if isinstance(node, ast.Import):
            return [alias.name for alias in node.names]
        base = node.module or ""
        if node.level:
            parent = package.split(".")
            parent = parent[:len(parent) - node.level + 1]
            base = ".".join(parent + ([base] if base else []))
        return [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]

    def visit(node, kind: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                for target in targets(child):
                    found.append((kind, target, child.lineno))
            elif isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                visit(child, "function" if kind == "top" else kind)
            elif isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                for statement in child.body:
                    visit(ast.Module(body=[statement], type_ignores=[]), "typing")
                for statement in child.orelse:
                    visit(ast.Module(body=[statement], type_ignores=[]), kind)
            else:
                visit(child, kind)

    visit(tree, "top")
    return found


def static_problems() -> list[str]:
    known = modules()
    problems = []
    graph: dict[str, set[str]] = {name: set() for name in known}
    for module, path in known.items():
        own = layer_of(module)
        for kind, target, line in imports(module, path, known):
            root = target.split(".")[0]
            if root == "engines" and kind != "typing":
                problems.append(f"{path.relative_to(ROOT)}:{line}: imports engines (training code; the node locates "
                                f"the shipped models without importing it)")
            if root != "dicomnode" or kind == "typing":
                continue
            if kind == "function":
                problems.append(f"{path.relative_to(ROOT)}:{line}: function-level import of {target} "
                                f"(import it at module level; a cycle it hid is a layering error)")
            if layer_of(target) > own and (module, target) not in KNOWN_UPWARD:
                problems.append(f"{path.relative_to(ROOT)}:{line}: {module} ({LAYERS[own][0]}) imports {target} "
                                f"({LAYERS[layer_of(target)][0]}), a layer above it")
            if kind == "top":
                # importing a.b.c runs a/__init__ and a/b/__init__ first
                parts = target.split(".")
                for end in range(1, len(parts) + 1):
                    name = ".".join(parts[:end])
                    if name in known and name != module and not module.startswith(name + "."):
                        graph[module].add(name)
    problems += [f"import cycle: {' -> '.join(cycle)}" for cycle in cycles(graph)]
    return problems


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), each as a closed path."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []

    def connect(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for neighbour in sorted(graph[node]):
            if neighbour not in index:
                connect(neighbour)
                low[node] = min(low[node], low[neighbour])
            elif neighbour in on_stack:
                low[node] = min(low[node], index[neighbour])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component) + [sorted(component)[0]])

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10 * len(graph) + 100))
    for node in sorted(graph):
        if node not in index:
            connect(node)
    return found


_PROBE = """
import importlib, json, sys
name, forbidden = sys.argv[1], sys.argv[2].split(",")
importlib.import_module(name)
print(json.dumps(sorted({m.split(".")[0] for m in sys.modules} & set(forbidden))))
"""

_IMPORT_ALL = """
import importlib, sys, traceback
failed = 0
for name in sys.argv[1:]:
    try:
        importlib.import_module(name)
    except Exception:
        failed += 1
        print(f"{name} does not import:\\n{traceback.format_exc(limit=3)}")
sys.exit(1 if failed else 0)
"""


def runtime_problems() -> list[str]:
    problems = []
    env_python = sys.executable
    names = sorted(name for name in modules() if not name.endswith("__main__"))  # __main__ runs the CLI
    done = subprocess.run([env_python, "-c", _IMPORT_ALL, *names], cwd=ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        problems.append((done.stdout + done.stderr).strip())
    for entry, forbidden in ENTRY_POINTS:
        done = subprocess.run([env_python, "-c", _PROBE, entry, ",".join(forbidden)], cwd=ROOT, capture_output=True,
                              text=True)
        if done.returncode != 0:
            problems.append(f"{entry} does not import: {done.stderr.strip()[-500:]}")
            continue
        loaded = json.loads(done.stdout.strip().splitlines()[-1])
        if loaded:
            problems.append(f"importing {entry} loads {', '.join(loaded)}")
    return problems


def main() -> int:
    problems = static_problems() + runtime_problems()
    for problem in problems:
        print(problem)
    if not problems:
        print(f"layers OK: {len(modules())} modules, {len(LAYERS)} layers, no cycle")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
