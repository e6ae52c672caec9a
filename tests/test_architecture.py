"""Apps depend one way: every import, at module level or inside a function, points down the layers.

Layers, lowest first (README, Architecture): the engine (``workers``), the shared foundation of
``finetune_site`` (errors, files, ids, ...), ``accounts_app``, ``base_models``
(``models_app/base_models``), ``datasets_app``, ``jobs_app``, ``models_app`` (the registry,
evaluations, exports, inference), ``webhooks_app`` (it hears every app below through signals),
``sweeps_app`` (trials are jobs, the best is promoted in the registry), ``pipelines_app`` (it runs
recipes through the services below, hearing their ends through signals), and
the project on top (urls, routing, the dashboard). A lower app
that must tell a higher one something sends a signal the higher one connects in ``ready()``.
"""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LAYERS = ["workers", "foundation", "accounts_app", "base_models", "datasets_app", "jobs_app", "models_app",
          "webhooks_app", "sweeps_app", "pipelines_app", "project"]
PROJECT = {"finetune_site.urls", "finetune_site.routing", "finetune_site.asgi", "finetune_site.wsgi",
           "finetune_site.views", "finetune_site.selectors", "finetune_site.consumers", "finetune_site.settings",
           "finetune_site.front_door", "finetune_site.server", "finetune_site.health"}
PACKAGES = ("workers", "finetune_site", "accounts_app", "datasets_app", "jobs_app", "models_app", "webhooks_app",
            "sweeps_app", "pipelines_app")


def layer_of(module: str) -> str | None:
    """The layer a dotted module name belongs to, or None for a third-party module."""
    if module.startswith("models_app.base_models"):
        return "base_models"
    top = module.split(".")[0]
    if top == "finetune_site":
        return "project" if any(module == p or module.startswith(p + ".") for p in PROJECT) else "foundation"
    return top if top in LAYERS else None


def module_name(path: Path, root: Path = ROOT) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path, root: Path = ROOT) -> list[tuple[int, str]]:
    """Every (line, imported module) in the file, wherever the import statement stands."""
    name = module_name(path, root)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the package, up level - 1
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
            found.append((node.lineno, base))
            found += [(node.lineno, f"{base}.{alias.name}") for alias in node.names
                      if layer_of(f"{base}.{alias.name}") != layer_of(base)]
    return found


def app_imports(root: Path = ROOT) -> list[tuple[str, int, str, str]]:
    """(file, line, from layer, to layer) for every import between two of our layers."""
    edges = []
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            here = layer_of(module_name(path, root))
            for line, target in imports_of(path, root):
                there = layer_of(target)
                if there and there != here:
                    edges.append((str(path.relative_to(root)), line, here, there))
    return edges


def cycles(edges: list[tuple[str, int, str, str]]) -> list[list[str]]:
    """Each cycle between layers, as the list of layers it goes through."""
    graph: dict[str, set[str]] = {}
    for _, _, here, there in edges:
        graph.setdefault(here, set()).add(there)
    found, path = [], []

    def visit(node: str) -> None:
        if node in path:
            found.append(path[path.index(node):] + [node])
            return
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            visit(nxt)
        path.pop()

    for start in sorted(graph):
        visit(start)
    return found


def test_no_cycle_between_apps():
    assert cycles(app_imports()) == []


def test_every_import_points_down_the_layers():
    upward = [f"{file}:{line} {here} imports {there}" for file, line, here, there in app_imports()
              if LAYERS.index(there) > LAYERS.index(here)]
    assert upward == [], "\n".join(upward)


def test_the_checks_see_a_cycle_hidden_in_a_function(tmp_path):
    """Imports inside functions count: a lower app reaching up to a higher one is a cycle."""
    for name, code in {"datasets_app/late.py": "def later():\n    from jobs_app.models import FineTuneJob\n",
                       "jobs_app/early.py": "from datasets_app.models import Dataset\n"}.items():
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_text(code)
    edges = app_imports(tmp_path)
    assert ("datasets_app/late.py", 2, "datasets_app", "jobs_app") in edges
    assert cycles(edges) == [["datasets_app", "jobs_app", "datasets_app"], ["jobs_app", "datasets_app", "jobs_app"]]
