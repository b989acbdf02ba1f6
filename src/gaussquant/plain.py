"""The one dataclass -> plain-dict conversion used for YAML configs, ``config.json`` and reports.

Configs are (nested) dataclasses; files hold plain JSON/YAML values. :func:`to_plain` walks a value and
returns dicts for dataclasses (instance fields only, so a class-level ``kind`` is left to the caller),
lists for tuples and lists, and everything else unchanged. A leaf module: it imports only the standard
library, so every layer may use it.
"""

from __future__ import annotations

import dataclasses
from typing import Any

__all__ = ["to_plain"]


def to_plain(obj: Any) -> Any:
    """``obj`` with every dataclass turned into a ``{field: value}`` dict and every tuple into a list."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_plain(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_plain(v) for k, v in obj.items()}
    return obj
