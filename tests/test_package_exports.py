"""The lazy public names of ``gaussquant``: each resolves, and type checkers see the same list."""

from __future__ import annotations

import ast
import importlib
import inspect

import pytest

import gaussquant


@pytest.mark.parametrize("name", sorted(gaussquant._EXPORTS))
def test_every_export_resolves_to_its_module(name):
    value = getattr(gaussquant, name)
    module = importlib.import_module(gaussquant._EXPORTS[name])
    assert getattr(module, name) is value
    assert name in dir(gaussquant)


def test_type_checking_block_imports_exactly_the_exports():
    tree = ast.parse(inspect.getsource(gaussquant))
    blocks = [node for node in tree.body if isinstance(node, ast.If) and getattr(node.test, "id", "") == "TYPE_CHECKING"]
    assert len(blocks) == 1
    seen = {alias.name: node.module for node in ast.walk(blocks[0]) if isinstance(node, ast.ImportFrom)
            for alias in node.names}
    assert seen == gaussquant._EXPORTS


def test_unknown_name_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        gaussquant.nope  # noqa: B018
