"""Finds and loads the example agents shipped in ``examples/`` (a source checkout or the wheel).

The examples are plain scripts a user reads and copies; the demo runs the very same files rather
than a private copy, so what the demo shows is what the examples do.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

_PACKAGED = Path(__file__).with_name("_examples")  # where the wheel puts examples/
_CHECKOUT = Path(__file__).resolve().parents[3] / "examples"  # collectors/agentwatch/collectors/ → repo


def examples_dir() -> Path:
    """The folder holding the example agents."""
    for candidate in (_CHECKOUT, _PACKAGED):
        if (candidate / "custom_agent.py").is_file():
            return candidate
    raise FileNotFoundError(f"example agents not found in {_CHECKOUT} or {_PACKAGED}; reinstall agentwatch")


def load_example(name: str) -> ModuleType:
    """Import ``examples/<name>.py`` as module ``agentwatch_examples.<name>``."""
    module_name = f"agentwatch_examples.{name}"
    if module_name in sys.modules:
        return sys.modules[module_name]
    path = examples_dir() / f"{name}.py"
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load example {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module  # dataclasses resolve their module through sys.modules
    spec.loader.exec_module(module)
    return module
