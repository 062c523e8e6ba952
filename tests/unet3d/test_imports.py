"""The one-way arrows between packages (api → unet3d, train → unet3d, space → unet3d) and importable modules."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("unet3d", "api", "train", "space")
# What each package may not import (top-level names), as DESIGN.md and STYLE.md draw the arrows.
FORBIDDEN = {
    "unet3d": {"api", "train", "space", "fastapi", "starlette", "gradio", "pydantic_settings", "optuna",
               "sqlalchemy", "alembic", "psycopg"},
    "api": {"train"},
    "space": {"train"},
}  # fmt: skip
# Imported only inside the function that needs them (never at a module's top level): the optional Ray engine, and
# uvicorn for `unet3d serve`.
LAZY_ONLY = {"unet3d": {"ray", "uvicorn"}}


def _modules(package: str) -> list[Path]:
    return sorted(p for p in (ROOT / package).rglob("*.py") if "migrations" not in p.parts or p.name != "env.py")


def _imports(path: Path) -> list[tuple[str, bool]]:
    """(top-level package imported, whether the import is at the module's top level) for each import in a file."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    top = {id(node) for node in tree.body}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name.split(".")[0], id(node) in top) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.module.split(".")[0], id(node) in top))
    return found


@pytest.mark.parametrize("package", PACKAGES)
def test_no_module_imports_across_a_forbidden_arrow(package):
    wrong = [
        f"{path.relative_to(ROOT)} imports {name}"
        for path in _modules(package)
        for name, at_top in _imports(path)
        if name in FORBIDDEN.get(package, set()) or (at_top and name in LAZY_ONLY.get(package, set()))
    ]
    assert wrong == []


def test_every_module_imports_and_unet3d_loads_no_service_or_training_dependency():
    names = [
        ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        for package in PACKAGES
        for path in _modules(package)
        if "migrations" not in path.parts and path.name != "__main__.py"
    ]
    core = [name for name in names if name.split(".")[0] == "unet3d"]
    code = (
        "import importlib, sys\n"
        f"for name in {core!r}: importlib.import_module(name)\n"
        f"print(sorted(m for m in {sorted(FORBIDDEN['unet3d'] | LAZY_ONLY['unet3d'])!r} if m in sys.modules))\n"
        f"for name in {names!r}: importlib.import_module(name)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "[]"


def test_public_names_are_all_exported():
    import unet3d

    for name in unet3d.__all__:
        assert hasattr(unet3d, name), name


def _outside_imports() -> list[tuple[str, str, str]]:
    """(importing file, unet3d module, name) for every `from unet3d... import name` in the other packages."""
    found = []
    for package in ("api", "train", "space", "bench"):
        for path in sorted((ROOT / package).rglob("*.py")):
            if "node_modules" in path.parts:
                continue
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("unet3d"):
                    found += [(str(path.relative_to(ROOT)), str(node.module), alias.name) for alias in node.names]
    return found


def test_the_other_packages_import_only_what_a_unet3d_module_lists_in_its_all():
    """A module's `__all__` is its public face: what api, train, space and bench may use (docs/architecture.md)."""
    import importlib

    imports = _outside_imports()
    assert len(imports) > 50  # the scan sees the real imports
    wrong = []
    for where, module, name in imports:
        public = getattr(importlib.import_module(module), "__all__", None)
        if public is None or name not in public:
            wrong.append(f"{where}: {name} from {module} (not in its __all__)")
    assert wrong == []
