"""Where the tests find the repository and their data, wherever in ``tests/`` a test module lives."""

from __future__ import annotations

from pathlib import Path
from typing import Final

REPO: Final = Path(__file__).resolve().parents[2]
"""The repository checkout (``tests/support/`` → the root)."""
DATA: Final = REPO / "tests" / "data"
"""Test data shipped with the suite (corpora, the seed config, Grafana's dashboard schema)."""
