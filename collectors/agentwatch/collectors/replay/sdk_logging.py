"""Quiet the one warning the OpenAI Agents SDK logs when it runs without an OpenAI API key.

The demo and ``agentwatch replay`` run the Agents SDK example with scripted models and no API key.
The SDK's own trace processor stays installed (agentwatch adds its processor beside it, never
instead of it), so at exit the SDK's exporter warns that it is skipping the export to OpenAI, once
per batch. In these two commands that warning is expected noise, so a filter drops exactly that
record; every other SDK log line, and the SDK's processors themselves, are left as they are.
"""

from __future__ import annotations

import logging
from typing import Final

SDK_LOGGER: Final = "openai.agents"
NO_KEY_MESSAGE: Final = "OPENAI_API_KEY is not set, skipping trace export"


class _DropNoKeyWarning(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.getMessage() != NO_KEY_MESSAGE


def quiet_missing_api_key_warning() -> None:
    """Drop the SDK's "no API key, skipping trace export" warning in this process (idempotent)."""
    logger = logging.getLogger(SDK_LOGGER)
    if not any(isinstance(existing, _DropNoKeyWarning) for existing in logger.filters):
        logger.addFilter(_DropNoKeyWarning())
