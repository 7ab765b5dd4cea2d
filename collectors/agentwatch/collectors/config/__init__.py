"""Configuration of the collector: settings from flags, environment and YAML, and bearer-token
auth.
"""

from __future__ import annotations

__all__: list[str] = []
