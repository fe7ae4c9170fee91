"""The public API is deliberate: every exported name exists, is documented, and is listed in order.

Like anyio's ``tests/test_all_attributes.py``.
"""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import pytest

import notifykit

PACKAGE_DIR = Path(notifykit.__file__).resolve().parent
MODULE_FILES = sorted(PACKAGE_DIR.rglob("*.py"))
# Constants and type aliases have no ``__doc__`` of their own; classes and functions must.
DOCUMENTABLE = [
    name
    for name in notifykit.__all__
    if inspect.isclass(getattr(notifykit, name, None))
    or inspect.isroutine(getattr(notifykit, name, None))
]


def test_the_package_has_a_version() -> None:
    assert isinstance(notifykit.__version__, str)
    assert notifykit.__version__


def test_all_has_no_duplicates() -> None:
    assert len(notifykit.__all__) == len(set(notifykit.__all__))


@pytest.mark.parametrize("name", notifykit.__all__)
def test_every_exported_name_exists(name: str) -> None:
    assert hasattr(notifykit, name)


@pytest.mark.parametrize("name", DOCUMENTABLE)
def test_every_exported_class_and_function_is_documented(name: str) -> None:
    obj = getattr(notifykit, name)
    doc = obj.__dict__.get("__doc__") if inspect.isclass(obj) else obj.__doc__
    assert doc, f"{name} has no docstring"
    # A dataclass without a docstring gets its signature as __doc__: that is not documentation.
    assert not doc.startswith(f"{name}("), f"{name} has only the dataclass-generated docstring"


@pytest.mark.parametrize("name", DOCUMENTABLE)
def test_every_exported_class_and_function_is_notifykits_own(name: str) -> None:
    assert getattr(notifykit, name).__module__.startswith("notifykit.")


def isort_style_key(name: str) -> tuple[int, str]:
    """Ruff's RUF022 order: SCREAMING_SNAKE_CASE, then CamelCase, then the rest; each sorted."""
    if name.isupper() and len(name) > 1:
        return 0, name
    if name[:1].isupper():
        return 1, name
    return 2, name


def test_all_is_sorted_constants_then_classes_then_functions() -> None:
    assert notifykit.__all__ == sorted(notifykit.__all__, key=isort_style_key)


@pytest.mark.parametrize(
    "path", MODULE_FILES, ids=[str(p.relative_to(PACKAGE_DIR)) for p in MODULE_FILES]
)
def test_every_module_has_a_docstring(path: Path) -> None:
    # Read from source, so a module whose optional dependency is not installed is checked too.
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    docstring = ast.get_docstring(tree)
    assert docstring, f"{path.relative_to(PACKAGE_DIR)} has no module docstring"
    assert docstring.strip()
