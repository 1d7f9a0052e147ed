"""Bytecode for the modules the workflow sandbox imports afresh for every workflow run.

Temporal's sandbox re-imports a workflow's own module (and its package) for each run, to
keep one run's module state from leaking into the next. Python reads that import from
`__pycache__` when a fresh .pyc is there, and otherwise compiles the source again — every
run. Where bytecode is never written (PYTHONDONTWRITEBYTECODE=1, as on the machines this
was measured on, or an image built without it) that compile was about 70 % of creating a
refund's sandbox: 1.5–4 ms of worker CPU per refund (README "Performance"). A worker
therefore writes the bytecode of its workflow modules once, at start.

A source directory the worker may not write to is left as it is (the worker runs, each
run compiles as before, and a warning says so); build images with `python -m compileall`.
"""

from __future__ import annotations

import compileall
import logging
from pathlib import Path
from types import ModuleType

log = logging.getLogger(__name__)


def write_bytecode(*packages: ModuleType) -> bool:
    """Compile the packages' modules into their `__pycache__` (only those out of date).
    True when every one is there."""
    written = True
    for package in packages:
        folder = Path(package.__file__).parent
        try:
            written &= bool(compileall.compile_dir(folder, maxlevels=0, quiet=2))
        except OSError as refused:
            written = False
            log.warning("no bytecode for %s (%s): each workflow run compiles it again", folder, refused)
    if not written:
        log.warning("some workflow modules have no bytecode: each workflow run compiles them again")
    return written
