"""What /metrics serves: the registry without the ``*_created`` samples, in the classic text format."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Final

from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

CONTENT_TYPE: Final = CONTENT_TYPE_PLAIN_0_0_4
"""Content type of ``exposition()``: the classic text format, which every Prometheus version scrapes."""


class ExposedRegistry:
    """A registry as /metrics shows it: without the ``*_created`` samples.

    prometheus_client adds a ``_created`` series beside every counter and histogram child, which
    doubles the series Prometheus stores and is never queried here; dropping it at exposition time
    avoids the library's process-wide switch (``disable_created_metrics``). It also answers
    ``restricted_registry`` (``?name[]=...``), which prometheus_client's ASGI app calls on whatever
    it serves.
    """

    def __init__(self, registry: Collector) -> None:
        self._registry = registry

    def collect(self) -> Iterator[Metric]:
        for metric in self._registry.collect():
            # collect() builds fresh Metric objects each time, so filtering them in place is safe
            metric.samples = [sample for sample in metric.samples if not sample.name.endswith("_created")]
            yield metric

    def restricted_registry(self, names: Iterable[str]) -> ExposedRegistry:
        restrict = getattr(self._registry, "restricted_registry", None)
        return ExposedRegistry(restrict(names) if restrict is not None else self._registry)


__all__ = ["CONTENT_TYPE", "ExposedRegistry"]
