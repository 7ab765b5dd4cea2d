"""``agentwatch demo``: the main job on the embedded store, from example agents to drift and
replay.
"""

from __future__ import annotations

__all__: list[str] = []
