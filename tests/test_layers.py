"""Layers point down: read from the source (ast), so no module is imported to check it.

`streams/` (the topology and its pure steps) sits at the bottom, `api/` (read models and
routes) on it, `services/` (processes and wiring) on both, `benchmarks/` on everything.
A module may import its own layer or one below; and what the API process and topic
provisioning load at start must not pull in Faust.
"""

from __future__ import annotations

import ast
from functools import cache
from pathlib import Path
from typing import Protocol

ROOT = Path(__file__).resolve().parents[1]
LAYERS = ("streams", "api", "services", "benchmarks")  # lowest first
# (importing module, imported package) pairs allowed to point up, each with its reason.
EXCEPTIONS: set[tuple[str, str]] = set()


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for layer in LAYERS for p in sorted((ROOT / layer).rglob("*.py"))}


def imported(path: Path) -> set[str]:
    """Dotted names of every module `path` imports, in functions too."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
            out |= {f"{node.module}.{alias.name}" for alias in node.names}  # `from pkg import module`
    return out


def upward_imports() -> list[str]:
    found = []
    for name, path in modules().items():
        rank = LAYERS.index(name.split(".")[0])
        for target in sorted(imported(path)):
            top = target.split(".")[0]
            if top in LAYERS and LAYERS.index(top) > rank and (name, top) not in EXCEPTIONS:
                found.append(f"{name} imports {target}")
    return sorted(set(found))


@cache
def loads(module: str) -> frozenset[str]:
    """Every module `module` may load: its imports (in functions too), followed through
    the project's own modules (third-party ones by name only)."""
    known = modules()
    out: set[str] = set()
    todo = [module]
    while todo:
        name = todo.pop()
        if name in out:
            continue
        out.add(name)
        path = known.get(name)
        if path is None:
            continue
        for target in imported(path):
            parts = target.split(".")
            # `import a.b.c` loads a, a.b and a.b.c
            todo += [".".join(parts[:i]) for i in range(1, len(parts) + 1)]
    return frozenset(out)


def test_no_layer_imports_a_layer_above_it() -> None:
    found = upward_imports()
    assert not found, "imports pointing up:\n" + "\n".join(found)


def test_the_api_and_topic_provisioning_do_not_load_faust() -> None:
    # `citybrain topics` and every process's start go through services.provision.
    for start in ("services.apiserver", "services.provision"):
        faust = sorted(m for m in loads(start) if m.split(".")[0] == "faust")
        assert not faust, f"{start} may load {', '.join(faust)}"


def test_the_settings_the_layers_read_are_the_deployments() -> None:
    """streams/ and api/ declare what they read of the settings as protocols; the one
    `Settings` the processes build must have every member they declare."""
    from api.settings import ApiSettings
    from services.config import Settings
    from streams.settings import StreamSettings

    settings = Settings()
    for protocol in (StreamSettings, ApiSettings):
        declared = {name for cls in protocol.__mro__ if Protocol in cls.__bases__
                    for name in vars(cls) if not name.startswith("_")}
        assert declared, protocol
        assert not [n for n in sorted(declared) if not hasattr(settings, n)], protocol.__name__
