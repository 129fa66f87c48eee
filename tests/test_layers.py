"""The layers, as a test: data flows one way (settings → client → engine → Airflow wiring).

The pure core has no I/O and no Airflow: only the standard library, pyarrow (formats),
botocore's exceptions, and other pure modules. A module that takes a client and makes a
request through it (checksums reads an object back and removes a damaged one) is engine.
The engine imports no Airflow and nothing of the Airflow layer. Sensors import no
operators. Every import counts, also those inside functions (the lazy ones), read from the
source's syntax tree.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "airflow_s3connect"

PURE = {
    "allowlist", "connection", "errors", "formats", "iam", "macros", "manifests", "objects",
    "notifications", "patterns", "redaction", "scope", "watermark", "wire", "writes",
}  # fmt: skip
ENGINE = {
    "catalog", "checksums", "cleanup", "client", "conditional", "copies", "deletes", "downloads", "events",
    "filesystem", "listing", "local", "native", "progress", "queues", "restores", "selection", "snapshots", "sources",
    "uploads", "watch",
}  # fmt: skip
AIRFLOW_LAYER = ("hooks", "operators", "sensors", "triggers", "plugins", "mixins")
#: Top-level modules of the Airflow layer (wiring, entry points, the CLI).
AIRFLOW_MODULES = ("__init__", "_compat", "bundles", "provider_info", "log_settings", "cli", "links", "mixins")
#: What the pure core may import besides the standard library and itself.
PURE_ALLOWED = ("pyarrow", "botocore.exceptions")


def _imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def _module(path: Path) -> str:
    return ".".join(path.relative_to(PACKAGE).with_suffix("").parts)


MODULES = {_module(p): _imports(p) for p in PACKAGE.rglob("*.py")}


def test_every_top_level_module_has_a_layer() -> None:
    top = {name for name in MODULES if "." not in name and name not in AIRFLOW_MODULES}
    assert top - PURE - ENGINE == set(), "put the new module in a layer of tests/test_layers.py"


@pytest.mark.parametrize("name", sorted(PURE))
def test_the_pure_core_imports_no_io_and_no_airflow(name: str) -> None:
    wrong = []
    for imported in MODULES[name]:
        root = imported.split(".")[0]
        if root in sys.stdlib_module_names or imported.startswith(PURE_ALLOWED):
            continue
        if root == "airflow_s3connect" and imported.split(".")[1] in PURE:
            continue
        wrong.append(imported)
    assert wrong == []


@pytest.mark.parametrize("name", sorted(ENGINE))
def test_the_engine_imports_no_airflow(name: str) -> None:
    wrong = [
        imported
        for imported in MODULES[name]
        if imported.split(".")[0] == "airflow"
        or (imported.startswith("airflow_s3connect.") and imported.split(".")[1] in AIRFLOW_LAYER)
    ]
    assert wrong == []


def test_sensors_import_no_operators() -> None:
    for name, imported in MODULES.items():
        if name.startswith("sensors"):
            assert not [i for i in imported if i.startswith("airflow_s3connect.operators")], name
