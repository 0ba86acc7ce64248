"""The package's layering: no module imports a layer above its own, and there are no import cycles.

Every import counts, also the ones inside functions (they hide cycles, they do not remove them). The layers
are listed in docs/architecture.md; a new module must be placed in one of them.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "ebft_repro"

LAYERS = (
    # 0. the algorithm: configs, the strided sampler, features, losses, the EBFT step
    ("config", "utils", "hf_compat", "losses", "sampler", "featurizer", "batching", "ebft", "architectures",
     "distributed", "generation"),
    # 1. data and models: task corpora, packed chunks, the built-in base model, run files
    ("tasks", "data", "pretrain", "models", "run_state"),
    # 2. evaluation/: metrics, downstream accuracy, the code sandbox
    ("evaluation",),
    # 3. training: the baselines' steps, a run's context and evaluation, and the training loop
    ("steps", "context", "run_eval", "trainer"),
    # 4. experiments/: the runner, reports, ablations, plots, benchmarks, scaling, the command line
    ("experiments", "__main__"),
    # 5. notebook/: the notebooks' helpers
    ("notebook",),
)  # fmt: skip


def _modules() -> dict[str, Path]:
    modules = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.with_suffix("").relative_to(PACKAGE.parent).parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        modules[name] = path
    return modules


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """Package modules that ``name`` imports anywhere in its file."""
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1] + ([node.module] if node.module else [])
            elif (node.module or "").split(".")[0] == "ebft_repro":
                base = node.module.split(".")
            else:
                continue
            prefix = ".".join(base)
            for alias in node.names:
                found.add(f"{prefix}.{alias.name}" if f"{prefix}.{alias.name}" in modules else prefix)
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name in modules}
    return {target for target in found if target in modules and target != name}


def _layer(name: str) -> int | None:
    """A module's layer: that of its subpackage (``evaluation``, ``experiments``, ``notebook``, ``tasks``), or
    of its own name at the package root."""
    short = name.split(".")[1] if "." in name else "__init__"
    for rank, members in enumerate(LAYERS):
        if short in members:
            return rank
    return 0 if short == "__init__" else None


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(name, path, modules) for name, path in modules.items()}


def test_every_module_has_a_layer():
    assert [name for name in _graph() if _layer(name) is None] == []


def test_no_module_imports_a_layer_above_its_own():
    upward = [
        f"{name} (layer {_layer(name)}) imports {target} (layer {_layer(target)})"
        for name, targets in sorted(_graph().items())
        for target in sorted(targets)
        if _layer(target) > _layer(name)
    ]
    assert upward == []


def test_there_are_no_import_cycles():
    graph = _graph()
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    cycles = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for target in sorted(graph[node]):
            if state.get(target) == 1:
                cycles.append(path[path.index(target) :] + [target])
            elif target not in state:
                visit(target, path + [target])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert cycles == []


def test_the_checker_sees_function_level_imports(tmp_path):
    """A cycle hidden in a function body (how models <-> pretrain used to be written) is still found."""
    modules = {"ebft_repro.a": tmp_path / "a.py", "ebft_repro.b": tmp_path / "b.py"}
    modules["ebft_repro.a"].write_text("def f():\n    from .b import g\n")
    modules["ebft_repro.b"].write_text("from .a import f\n")
    assert _imports("ebft_repro.a", modules["ebft_repro.a"], modules) == {"ebft_repro.b"}
    assert _imports("ebft_repro.b", modules["ebft_repro.b"], modules) == {"ebft_repro.a"}


MAX_LINES = 320  # "about 300": a module that outgrows this gets split by job (docs/architecture.md)
LONGER_BY_DESIGN = {
    "ebft_repro.evaluation._sandbox_codec",  # one format: its encoder and decoder read side by side
    "ebft_repro.sampler",  # notebook 02 renders its functions with their line numbers
}


def test_modules_stay_about_300_lines():
    sizes = {name: len(path.read_text().splitlines()) for name, path in _modules().items()}
    assert {name: n for name, n in sizes.items() if n > MAX_LINES and name not in LONGER_BY_DESIGN} == {}
    assert all(name in sizes for name in LONGER_BY_DESIGN)  # an exemption must name a real module


SANDBOX_CHILD_IMPORTS = {  # what the sandbox's processes run; the package is not on their path
    "ebft_repro.evaluation._sandbox_codec": set(),
    "ebft_repro.evaluation._sandbox_confine": set(),
    "ebft_repro.evaluation._sandbox_driver": {
        "ebft_repro.evaluation._sandbox_codec",
        "ebft_repro.evaluation._sandbox_confine",
    },
    "ebft_repro.evaluation._sandbox_candidate": {
        "ebft_repro.evaluation._sandbox_codec",
        "ebft_repro.evaluation._sandbox_confine",
    },
}


def test_sandbox_processes_import_only_what_they_are_sent():
    """The children get exactly these modules (sandbox._child_modules); any other import would fail there."""
    modules = _modules()
    found = {name: _imports(name, modules[name], modules) for name in SANDBOX_CHILD_IMPORTS}
    assert found == SANDBOX_CHILD_IMPORTS
