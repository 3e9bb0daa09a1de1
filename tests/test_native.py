"""Every native module is compiled, registered with the loader, and has its twin behind --python-core."""

from __future__ import annotations

import importlib

import pytest

from media import native


@pytest.mark.parametrize("name", native.NATIVE_MODULES)
def test_native_module_is_compiled_and_registered(name: str) -> None:
    compiled = importlib.import_module(f"media._native.{name}")
    twin = importlib.import_module(f"media.{name}")
    loader = getattr(native, f"{name}_module")
    assert compiled.__file__ is not None and not compiled.__file__.endswith(".py")
    assert loader() is compiled
    assert loader(python_core=True) is twin
    assert native.native_error() is None
