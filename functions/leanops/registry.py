"""Topics as runs read them: the settings ``leanops topics push`` stored in the state table (decision 0013).

A topic's settings are one item of the state table, versioned, with who pushed them and when; each run's
acquire reads its topic's item (one strongly consistent GetItem) and carries the settings in the run state,
so every task of a run works by the settings its acquire read, whatever is pushed meanwhile. Processor code
stays in the deployed package (or, locally, the project's folder): only settings move without a deploy.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from leanops.config import TopicConfig, parse_settings
from leanops.errors import ConfigError
from leanops.protocol.store import StateStore


def settings_digest(settings: dict[str, Any]) -> str:
    """A digest of a topic's settings (key order included: a schema's columns are ordered)."""
    text = json.dumps(settings, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()


class PushedTopics:
    """The topics pushed to one state table (a :class:`leanops.config.TopicCatalog`)."""

    def __init__(self, store: StateStore, folder: Path) -> None:
        self.store = store
        self._folder = folder

    @property
    def folder(self) -> Path:
        return self._folder

    def topic(self, name: str) -> TopicConfig:
        pushed = self.store.read_pushed_topic(name)
        if pushed is None:
            raise ConfigError(
                f"topic {name!r} is not pushed to the state table {self.store.table_name}: "
                "push the topics file with `leanops topics push`"
            )
        return parse_settings(name, pushed.settings, f"topic {name!r} (pushed version {pushed.version})")
