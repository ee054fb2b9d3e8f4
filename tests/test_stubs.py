"""The type stubs (python/nanobragg/_core.pyi) name only what the compiled binding has."""
import ast
from pathlib import Path

import nanobragg
from nanobragg import _core

STUB = Path(nanobragg.__file__).with_name("_core.pyi")


def test_every_stubbed_name_exists_in_the_binding():
    tree = ast.parse(STUB.read_text())
    missing = []
    for node in tree.body:
        if isinstance(node, ast.ClassDef):
            cls = getattr(_core, node.name, None)
            if cls is None:
                missing.append(node.name)
                continue
            for item in node.body:
                if isinstance(item, ast.FunctionDef) and not item.name.startswith("__") and not hasattr(cls, item.name):
                    missing.append(f"{node.name}.{item.name}")
        elif isinstance(node, ast.FunctionDef) and not hasattr(_core, node.name):
            missing.append(node.name)
    assert not missing, missing


def test_every_public_class_of_the_binding_is_stubbed():
    tree = ast.parse(STUB.read_text())
    stubbed = {n.name for n in tree.body if isinstance(n, (ast.ClassDef, ast.FunctionDef))}
    public = {n for n in dir(_core) if not n.startswith("_") and isinstance(getattr(_core, n), type)}
    assert public <= stubbed, sorted(public - stubbed)
