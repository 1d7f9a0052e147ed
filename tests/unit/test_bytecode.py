"""The workflow sandbox imports a flow's module afresh for every run: a worker writes the
modules' bytecode at start so those imports read it instead of compiling the source."""

from __future__ import annotations

import importlib.util
import types
from pathlib import Path

import workflows
from adapters.bytecode import write_bytecode


def package_at(folder: Path) -> types.ModuleType:
    folder.mkdir()
    (folder / "__init__.py").write_text("")
    (folder / "flow.py").write_text("ANSWER = 42\n")
    package = types.ModuleType(folder.name)
    package.__file__ = str(folder / "__init__.py")
    return package


def test_the_flow_modules_get_bytecode_that_matches_their_source(tmp_path):
    package = package_at(tmp_path / "flows_pkg")

    assert write_bytecode(package)

    for source in ("__init__.py", "flow.py"):
        cached = Path(importlib.util.cache_from_source(str(tmp_path / "flows_pkg" / source)))
        assert cached.exists(), cached
    # The loader accepts it: it is read, not compiled, on the next import.
    loader = importlib.machinery.SourceFileLoader("flows_pkg.flow", str(tmp_path / "flows_pkg" / "flow.py"))
    assert loader.get_code("flows_pkg.flow") is not None


def test_settleflows_own_flow_modules_are_written(tmp_path):
    assert write_bytecode(workflows)
    refund = Path(workflows.__file__).parent / "refund.py"
    assert Path(importlib.util.cache_from_source(str(refund))).exists()


def test_a_folder_where_no_bytecode_can_be_written_leaves_the_worker_running(tmp_path):
    package = package_at(tmp_path / "unwritable")
    (tmp_path / "unwritable" / "__pycache__").write_text("a file where the cache folder would go")

    assert write_bytecode(package) is False  # said, not raised: each run compiles as before
