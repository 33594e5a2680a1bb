"""The dependency direction, enforced: kernel ← plugins ← wiring ← applications (CLIs, DAGs,
dashboard). docs/architecture.md draws it.

Every import in every module counts, including the lazy ones inside functions: a lazy import
still couples the modules, it only hides the coupling until the function runs.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

#: The kernel: domain types, settings, failure classes, the store Protocol and the processing core.
KERNEL = {
    "newspulse.entities",
    "newspulse",
    "newspulse.schema",
    "newspulse.settings",
    "newspulse.errors",
    "newspulse.store",
    "newspulse.store.base",
    "newspulse.pipeline",
    "newspulse.runner",
    "newspulse.retrying",
    "newspulse.store.sink",
    "newspulse.logs",
    "newspulse.bundled",
    "newspulse.metrics",
    "newspulse.redact",
    "newspulse.signals",
}
WIRING = {"newspulse.wiring"}
#: Applications: command lines, DAGs and the dashboard. They may import anything.
APPS_PREFIXES = ("dags", "newspulse.dashboard")
APPS = {"newspulse.cli", "newspulse.console", "newspulse.dashboard_process", "newspulse.airflow_notices", "newspulse.models.cli", "newspulse.ingest.cli", "newspulse.alerts.cli"}
#: Import roots: one for the product (its top-level folders install under ``newspulse``), one
#: for the DAG files Airflow loads by path.
FIRST_PARTY = ("newspulse", "dags")
#: Checkout folder → import name (pyproject.toml's package-dir).
FOLDERS = {"newspulse": "newspulse", "models": "newspulse.models", "ingest": "newspulse.ingest", "dashboard": "newspulse.dashboard", "dags": "dags"}
#: The generic names the folders had before they moved under ``newspulse``.
OLD_ROOTS = ("models", "ingest", "dashboard")


def module_name(path: Path) -> str:
    top, *parts = path.relative_to(ROOT).with_suffix("").parts
    if parts and parts[-1] == "__init__":
        parts.pop()
    return ".".join([FOLDERS[top], *parts])


def module_file(name: str) -> Path:
    """Where the checkout keeps module ``name`` (without a suffix): the inverse of module_name."""
    parts = name.split(".")
    for folder, root in sorted(FOLDERS.items(), key=lambda item: -len(item[1])):
        prefix = root.split(".")
        if parts[: len(prefix)] == prefix:
            return ROOT.joinpath(folder, *parts[len(prefix):])
    return ROOT.joinpath(*parts)


def layer(module: str) -> str:
    if module in KERNEL:
        return "kernel"
    if module in WIRING:
        return "wiring"
    if module in APPS or any(module == prefix or module.startswith(prefix + ".") for prefix in APPS_PREFIXES):
        return "app"
    return "plugin"


def first_party_imports(path: Path, module: str) -> set[str]:
    """Every first-party module ``path`` imports, at any depth of its code."""
    found: set[str] = set()
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            # ``from pkg import mod`` imports pkg.mod when that is a module.
            names = [f"{base}.{alias.name}" if _is_module(f"{base}.{alias.name}") else base for alias in node.names]
        else:
            continue
        found.update(n for n in names if n.split(".")[0] in FIRST_PARTY)
    return found


def _is_module(name: str) -> bool:
    path = module_file(name)
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def all_modules() -> dict[str, Path]:
    modules = {}
    for top in FOLDERS:
        for path in sorted((ROOT / top).rglob("*.py")):
            modules[module_name(path)] = path
    return modules


def family(module: str) -> str:
    """A plugin's family: the text plugins (``newspulse.models``, ``newspulse.ingest``) or the
    infrastructure ones (store backends, Kafka, the alerter, the embedded queue)."""
    second = module.split(".")[1:2]
    return second[0] if second and second[0] in OLD_ROOTS else "infrastructure"


def violations() -> list[str]:
    allowed = {"kernel": {"kernel"}, "plugin": {"kernel", "plugin"}, "wiring": {"kernel", "plugin", "wiring"}}
    found = []
    for module, path in all_modules().items():
        mine = layer(module)
        if mine == "app":
            continue
        for imported in sorted(first_party_imports(path, module)):
            theirs = layer(imported)
            if theirs not in allowed[mine]:
                found.append(f"{module} ({mine}) imports {imported} ({theirs})")
            elif mine == theirs == "plugin" and "infrastructure" in {family(module), family(imported)} and family(module) != family(imported):
                # Kafka reaching models/ (or models/ opening a store backend) is wiring's job.
                found.append(f"{module} (plugin) imports {imported}: a plugin of another family")
    return found


def test_the_walk_sees_lazy_imports() -> None:
    """The rule is only as good as the walk: a function-level import must be found."""
    imports = first_party_imports(ROOT / "newspulse" / "wiring.py", "newspulse.wiring")
    assert {"newspulse.models.sentiment.predict", "newspulse.ingest.tagging", "newspulse.kafka.processor", "newspulse.embedded"} <= imports
    assert layer("newspulse.models.sentiment.predict") == "plugin" and layer("newspulse.pipeline") == "kernel"


def test_layers_import_only_downwards() -> None:
    assert violations() == []


#: ``newspulse.models`` holds one package per concern (docs/architecture.md, "Models"); each may
#: import only the concerns named here. The classifier's serving picks a backend; the backends
#: read the classifier's model card (hashes, the int8 check); the topic model reuses the
#: classifier's data folder and code version; the summariser runs on the backends and packs
#: sentences like the classifier. ``models/cli.py`` is an application: no concern imports it.
MODEL_CONCERNS = {
    "sentences": set(),
    "backends": {"sentiment"},
    "sentiment": {"backends", "sentences"},
    "topics": {"sentiment"},
    "summarize": {"backends", "sentiment", "sentences"},
    "cli": {"backends", "sentiment", "topics"},
}


def model_concern(module: str) -> str | None:
    """``newspulse.models.<concern>[.…]`` → concern; None outside ``newspulse.models``."""
    parts = module.split(".")
    return parts[2] if parts[:2] == ["newspulse", "models"] and len(parts) > 2 else None


def test_every_models_package_is_a_declared_concern() -> None:
    """A new package or top-level module under models/ must say where it sits among the others."""
    found = {model_concern(m) for m in all_modules()} - {None}
    assert found == set(MODEL_CONCERNS)


def test_models_concerns_import_only_their_declared_neighbours() -> None:
    found = []
    for module, path in all_modules().items():
        mine = model_concern(module)
        if mine is None:
            continue
        for imported in sorted(first_party_imports(path, module)):
            theirs = model_concern(imported)
            if theirs is not None and theirs != mine and theirs not in MODEL_CONCERNS[mine]:
                found.append(f"{module} ({mine}) imports {imported} ({theirs})")
    assert found == []


def test_nothing_imports_the_old_top_level_names() -> None:
    """``models``, ``ingest`` and ``dashboard`` are folders, not import roots: importing them by
    the bare name would load a second copy of each module beside ``newspulse.models``."""
    found = []
    for folder in (*FOLDERS, "tests", "bench"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else []
                found += [f"{path.relative_to(ROOT)}:{node.lineno} {n}" for n in names if n.split(".")[0] in OLD_ROOTS]
    assert found == []


def test_every_first_party_import_names_something_that_exists() -> None:
    """A lazy import of a moved name fails only when its function runs (a DAG task, say): check
    every ``from first_party import name`` against the module's top-level names here."""
    assert _unresolved_imports(all_modules()) == []


def test_benchmarks_and_experiments_import_only_names_that_exist() -> None:
    """bench/ and experiments/ run by hand, long after a product module moved: an import the
    move missed would fail only then, so every first-party import there is checked too."""
    scripts = {str(path.relative_to(ROOT)): path for folder in SCRIPT_FOLDERS for path in sorted((ROOT / folder).rglob("*.py"))}
    assert _unresolved_imports(scripts) == []


def _unresolved_imports(files: dict[str, Path]) -> list[str]:
    """``import first_party.module`` of no module, ``from first_party.module import name`` of a
    name it does not define, at any depth of each file's code."""
    missing = []
    for label, path in files.items():
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                missing += [f"{label}: no module {a.name}" for a in node.names if a.name.split(".")[0] in FIRST_PARTY and _module_path(a.name) is None]
            if isinstance(node, ast.ImportFrom) and not node.level and (node.module or "").split(".")[0] in FIRST_PARTY:
                target = _module_path(node.module)
                if target is None:
                    missing.append(f"{label}: no module {node.module}")
                    continue
                defined = _top_level_names(target)
                missing += [
                    f"{label}: {node.module} has no {alias.name}"
                    for alias in node.names
                    if alias.name not in defined and not _is_module(f"{node.module}.{alias.name}")
                ]
    return missing


def _module_path(name: str) -> Path | None:
    path = module_file(name)
    for candidate in (path.with_suffix(".py"), path / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _top_level_names(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.parse(path.read_text(), filename=str(path)).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names.update(t.id for t in targets if isinstance(t, ast.Name))
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update((a.asname or a.name).split(".")[0] for a in node.names)
        elif isinstance(node, ast.If):  # TYPE_CHECKING blocks and the like
            names.update(_top_level_names_of(node.body))
    return names


def _top_level_names_of(body: list) -> set[str]:
    names: set[str] = set()
    for node in body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update((a.asname or a.name).split(".")[0] for a in node.names)
        elif isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            names.add(node.name)
    return names


def test_kernel_alone_loads_no_heavy_backend() -> None:
    """``import newspulse.pipeline`` in a fresh interpreter pulls in no model, broker or search client."""
    code = "import json, sys, newspulse.pipeline; print(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT).stdout
    loaded = set(json.loads(out))
    heavy = {m for m in loaded if m.split(".")[0] in {"torch", "transformers", "kafka", "confluent_kafka", "elasticsearch", "elastic_transport", "streamlit", "sklearn"}}
    assert heavy == set()
    first_party = {m for m in loaded if m.split(".")[0] in FIRST_PARTY}
    assert {layer(m) for m in first_party} == {"kernel"}, sorted(first_party)


def test_embedded_mode_needs_no_kafka_or_elasticsearch_client() -> None:
    """The core install (no [kafka], no [elasticsearch] extra) runs embedded mode: its whole
    stack, the CLI included, imports neither client."""
    code = (
        "import json, sys, newspulse.cli, newspulse.wiring, newspulse.embedded, newspulse.alerts, newspulse.store.sqlite, newspulse.ingest.crawler; "
        "print(json.dumps(sorted(sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT).stdout
    assert {m.split(".")[0] for m in json.loads(out)} & {"kafka", "elasticsearch", "elastic_transport", "streamlit"} == set()


#: Scripts outside the product: benchmarks and finished experiments. They import each other by
#: bare file name (each puts its folder on ``sys.path``), so those names are what to look for.
SCRIPT_FOLDERS = ("bench", "experiments")


def _script_modules() -> dict[str, list[Path]]:
    """Import name → its files: a script, or a package folder beside them (all its files)."""
    found = {}
    for folder in SCRIPT_FOLDERS:
        found.update({path.stem: [path] for path in sorted((ROOT / folder).glob("*.py"))})
        found.update({init.parent.name: sorted(init.parent.rglob("*.py")) for init in sorted((ROOT / folder).glob("*/__init__.py"))})
    return found


def _import_roots(path: Path) -> set[str]:
    roots: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            roots.add(node.module.split(".")[0])
    return roots


def test_the_product_never_imports_benchmarks_or_experiments() -> None:
    """The installed package ships without bench/ and experiments/: an import of either from
    product code would work in a checkout and fail from the wheel."""
    forbidden = set(SCRIPT_FOLDERS) | set(_script_modules())
    found = [
        f"{module} imports {root}"
        for module, path in all_modules().items()
        for root in sorted(_import_roots(path) & forbidden)
    ]
    assert found == []


def test_benchmark_scripts_import_no_cycle() -> None:
    """bench/ and experiments/ scripts form a tree: a cycle (each importing a private name of
    the other) makes the order of imports decide what works."""
    scripts = _script_modules()
    graph = {name: set().union(*map(_import_roots, paths)) & set(scripts) - {name} for name, paths in scripts.items()}
    cycles = []

    def visit(name: str, trail: tuple[str, ...]) -> None:
        for nxt in sorted(graph[name]):
            if nxt in trail:
                cycles.append(" -> ".join([*trail[trail.index(nxt):], nxt]))
            else:
                visit(nxt, (*trail, nxt))

    for name in graph:
        visit(name, (name,))
    assert cycles == []


def test_benchmarks_import_no_private_name() -> None:
    """A benchmark that imports another module's ``_private`` name (a test helper's, a
    product module's) breaks silently when that module renames its internals: what bench/
    shares is public. (experiments/ are finished and not rerun; they are not held to it.)"""
    found = [
        f"{path.relative_to(ROOT)}:{node.lineno} {node.module}.{alias.name}"
        for path in sorted((ROOT / "bench").rglob("*.py"))
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path)))
        if isinstance(node, ast.ImportFrom) and not node.level
        for alias in node.names
        if alias.name.startswith("_") and node.module != "__future__"
    ]
    assert found == []
