"""The repository's layout: imports run one way, the comparator cannot reach TensorFlow, and no
module grows past what a reader takes in at once.

The import graph is read from the source with `ast` (nothing is imported): every `import` and
`from ... import` statement counts, at module level and inside functions alike, since a
function-level import closes a circle as surely as a module-level one, only later.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("qarac", "parity", "legacy_keras")
# What the legacy runner alone may import: TensorFlow, its Keras 2, Keras 3, and the legacy model.
TENSORFLOW = ("tensorflow", "tf_keras", "keras", "legacy_keras")
# The modules `qarac-parity check BUNDLE` runs: the comparator, the bundle codec, the report.
COMPARATOR = ("parity.check", "parity.comparator", "parity.tolerance", "parity.port_runner", "parity.compare",
              "parity.agreement", "parity.reference", "parity.bundle", "parity.report", "parity.plot",
              "parity.testing", "parity.reproduction", "parity.mutations")
# The port runner: the parity code that builds the port or runs it (`parity.check` = runner, then comparator).
PORT_RUNNER = ("parity.port_runner", "parity.port", "parity.port_noise", "parity.port_gradients",
               "parity.port_training", "parity.capture", "parity.ledger", "parity.sharp")
# The port's model code (what the port runner builds): the comparator reaches none of it.
PORT_MODEL = ("qarac.base", "qarac.trainer", "qarac.encoder", "qarac.decoder", "qarac.heads", "qarac.losses")
# The legacy runner: the only parity code that may import TensorFlow (and the core's Keras runner).
LEGACY_RUNNER = "parity.legacy"
# The model-agnostic core (`parity.core`): it knows no model. Its Keras runner is its only TensorFlow
# importer; what `check --spec BUNDLE` runs reaches none.
CORE = "parity.core"
CORE_KERAS_RUNNER = "parity.core.keras_side"
CORE_CHECK = ("parity.core.pipeline", "parity.core.judge", "parity.core.codec", "parity.core.torch_side",
              "parity.core.report", "parity.pairs")
MODEL_PACKAGES = ("qarac", "legacy_keras", "keras3_qarac", "parity.models")
# Past this many lines a module holds more than one concept: split it.
MAX_MODULE_LINES = 400
LINE_LIMITED = ("qarac", "parity")


def module_files(root: Path = ROOT, packages=PACKAGES) -> dict[str, Path]:
    """Dotted module name -> file, for every module of `packages` under `root`."""
    modules = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            name = ".".join(path.relative_to(root).with_suffix("").parts)
            modules[name.removesuffix(".__init__")] = path
    return modules


def _absolute(module: str, path: Path, node: ast.ImportFrom) -> str:
    """The absolute name a `from X import ...` statement of `module` reads from."""
    if not node.level:
        return node.module or ""
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    base = package[: len(package) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def imported_names(module: str, path: Path) -> set[str]:
    """Every dotted name `module` imports, anywhere in its file (`from a import b` gives `a.b`: b may be a module)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = _absolute(module, path, node)
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names if alias.name != "*")
    return names


def _owner(name: str, modules: dict[str, Path]) -> str | None:
    """The module of ours a dotted name lives in (its longest prefix that is a module), or None."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def import_graph(root: Path = ROOT, packages=PACKAGES) -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """(module -> the modules of ours it imports, module -> the top-level outside packages it imports).

    A module importing its own package (`from qarac import x` inside `qarac.y`) is an edge to the
    package's `__init__` only where `x` is not itself a module.
    """
    modules = module_files(root, packages)
    edges: dict[str, set[str]] = {name: set() for name in modules}
    outside: dict[str, set[str]] = {name: set() for name in modules}
    for module, path in modules.items():
        for name in imported_names(module, path):
            owner = _owner(name, modules)
            if owner is None:
                outside[module].add(name.split(".")[0])
            elif owner != module:
                edges[module].add(owner)
    # `from qarac import x` yields both `qarac` and `qarac.x`: where `qarac.x` is a module, the edge is to it.
    for module, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.names and all(
                    f"{_absolute(module, path, node)}.{alias.name}" in modules for alias in node.names):
                edges[module].discard(_absolute(module, path, node))
    # Importing `qarac.x` runs `qarac/__init__.py` first: every module imports its enclosing packages.
    for module in modules:
        parts = module.split(".")
        edges[module].update(".".join(parts[:end]) for end in range(1, len(parts)) if ".".join(parts[:end]) in modules)
    return edges, outside


def circles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The import graph's strongly connected components of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(edges.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def reachable(start: str, edges: dict[str, set[str]]) -> dict[str, str | None]:
    """Every module `start` imports, directly or not: module -> the module that imports it."""
    parents: dict[str, str | None] = {start: None}
    frontier = [start]
    while frontier:
        module = frontier.pop()
        for target in sorted(edges.get(module, ())):
            if target not in parents:
                parents[target] = module
                frontier.append(target)
    return parents


def tensorflow_paths(start: str, edges, outside) -> list[str]:
    """Each import chain from `start` to TensorFlow (or tf_keras, Keras, the legacy model), named."""
    parents = reachable(start, edges)
    chains = []
    for module in sorted(parents):
        hits = sorted(set(outside[module]) & set(TENSORFLOW))
        if module.split(".")[0] == "legacy_keras" or module.startswith(LEGACY_RUNNER):
            hits.append(module)
        if hits:
            chain, step = [], module
            while step is not None:
                chain.append(step)
                step = parents[step]
            chains.append(" -> ".join(reversed(chain)) + f" imports {', '.join(hits)}")
    return chains


def long_modules(root: Path = ROOT, packages=LINE_LIMITED, limit: int = MAX_MODULE_LINES) -> list[str]:
    """`name (N lines)` for every module of `packages` longer than `limit` lines."""
    counts = {name: len(path.read_text(encoding="utf-8").splitlines())
              for name, path in module_files(root, packages).items()}
    return [f"{name} ({count} lines)" for name, count in sorted(counts.items()) if count > limit]


def test_no_module_over_the_line_limit():
    found = long_modules()
    assert not found, f"modules over {MAX_MODULE_LINES} lines (split each by concept): {', '.join(found)}"


def test_no_import_circle():
    edges, _ = import_graph()
    found = circles(edges)
    assert not found, "import circles: " + "; ".join(" <-> ".join(c) for c in found)


@pytest.mark.parametrize("module", COMPARATOR)
def test_comparator_reaches_no_tensorflow(module):
    edges, outside = import_graph()
    assert module in edges, f"{module} is not a module any more: update COMPARATOR"
    chains = tensorflow_paths(module, edges, outside)
    assert not chains, "\n".join(chains)


def test_the_comparator_imports_no_runner():
    """The comparator judges two results (`LegacyRun`, `PortRun`): nothing it imports can build or run the port."""
    edges, _ = import_graph()
    parents = reachable("parity.comparator", edges)
    reached = []
    for module in sorted(set(parents) & {*PORT_RUNNER, *PORT_MODEL}):
        chain, step = [], module
        while step is not None:
            chain.append(step)
            step = parents[step]
        reached.append(" -> ".join(reversed(chain)))
    assert not reached, "\n".join(reached)


def test_importing_the_comparator_loads_no_framework():
    """What `import parity.comparator` really loads (package `__init__`s included), in a fresh process:
    no model code of the port, no `transformers`, no torch, no TensorFlow or Keras."""
    code = ("import sys, parity.comparator\n"
            "print('\\n'.join(sorted(sys.modules)))\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-2000:]
    loaded = set(result.stdout.split())
    frameworks = ("torch", "transformers", "tensorflow", "tf_keras", "keras", "jax", "legacy_keras")
    found = sorted(name for name in loaded if name.split(".")[0] in frameworks or name in PORT_MODEL)
    assert not found, f"importing parity.comparator loads {found[:12]}"


def test_only_the_legacy_runner_imports_tensorflow():
    """In parity/, TensorFlow, Keras and the legacy model are imported by the legacy runner alone."""
    edges, outside = import_graph()
    offenders = []
    for module in edges:
        if module.split(".")[0] != "parity" or module.startswith(LEGACY_RUNNER) or module == CORE_KERAS_RUNNER:
            continue
        direct = sorted(set(outside[module]) & set(TENSORFLOW))
        direct += sorted(target for target in edges[module] if target.split(".")[0] == "legacy_keras")
        if direct:
            offenders.append(f"{module} imports {', '.join(direct)}")
    assert not offenders, "\n".join(offenders)


def model_imports(edges, outside, core: str = CORE) -> list[str]:
    """Each import chain from a module of `core` to a model package (the port, the legacy, an adapter)."""
    chains = []
    for module in sorted(m for m in edges if m == core or m.startswith(core + ".")):
        parents = reachable(module, edges)
        for target in sorted(parents):
            hits = [target] if target.startswith(MODEL_PACKAGES) else []
            hits += sorted(name for name in outside.get(target, ()) if name in MODEL_PACKAGES)
            if hits:
                chain, step = [], target
                while step is not None:
                    chain.append(step)
                    step = parents[step]
                chains.append(" -> ".join(reversed(chain)) + f" reaches {', '.join(hits)}")
    return chains


def test_the_core_imports_no_model_package():
    edges, outside = import_graph()
    assert any(m.startswith(CORE + ".") for m in edges), "parity.core has no modules: update CORE"
    found = model_imports(edges, outside)
    assert not found, "\n".join(found)


def test_a_core_module_importing_a_model_is_found(tmp_path):
    """The checker itself: a core module reaching the port's package through a neighbour is named."""
    root = _tree(tmp_path, {"parity/__init__.py": "", "parity/core/__init__.py": "", "parity/helper.py": "import qarac\n",
                            "parity/core/judge.py": "def f():\n    from parity import helper\n",
                            "qarac/__init__.py": ""})
    edges, outside = import_graph(root, ("parity", "qarac"))
    found = model_imports(edges, outside)
    assert found and "parity.core.judge -> parity.helper -> qarac" in found[0]


@pytest.mark.parametrize("module", CORE_CHECK)
def test_the_core_check_reaches_no_tensorflow(module):
    edges, outside = import_graph()
    assert module in edges, f"{module} is not a module any more: update CORE_CHECK"
    chains = tensorflow_paths(module, edges, outside)
    chains += [f"{module} reaches {CORE_KERAS_RUNNER}"] if CORE_KERAS_RUNNER in reachable(module, edges) else []
    assert not chains, "\n".join(chains)


def _tree(tmp_path: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return tmp_path


def test_a_function_level_circle_is_found(tmp_path):
    """The checker itself: a circle closed inside a function, through a relative import, is found."""
    root = _tree(tmp_path, {"pkg/__init__.py": "", "pkg/a.py": "from pkg import b\n",
                            "pkg/b.py": "def f():\n    from .a import thing\n", "pkg/c.py": "import pkg.a\n"})
    edges, _ = import_graph(root, ("pkg",))
    assert circles(edges) == [["pkg.a", "pkg.b"]]


def test_a_tensorflow_import_behind_a_function_is_found(tmp_path):
    root = _tree(tmp_path, {"pkg/__init__.py": "", "pkg/check.py": "from pkg.helper import x\n",
                            "pkg/helper.py": "def x():\n    import tensorflow as tf\n"})
    edges, outside = import_graph(root, ("pkg",))
    assert tensorflow_paths("pkg.check", edges, outside) == ["pkg.check -> pkg.helper imports tensorflow"]


def test_an_over_long_module_is_found(tmp_path):
    """The checker itself: a module one line over the limit is named, one at the limit is not."""
    root = _tree(tmp_path, {"pkg/__init__.py": "", "pkg/sub/__init__.py": "",
                            "pkg/at_limit.py": "x = 1\n" * MAX_MODULE_LINES,
                            "pkg/sub/over.py": "x = 1\n" * (MAX_MODULE_LINES + 1)})
    assert long_modules(root, ("pkg",)) == [f"pkg.sub.over ({MAX_MODULE_LINES + 1} lines)"]
