"""Metric names in PromQL expressions, and the names the add-on's registries export.

Neither Prometheus nor its tools print an expression's selectors, so names are found by removing
what cannot be one (strings, label matchers, ranges, grouping clauses, function calls, keywords,
numbers) and keeping the identifiers left. `tests/manifests/test_observability.py` checks this on a
table of expressions before trusting it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import Metric

_KEYWORDS = {"and", "or", "unless", "bool", "offset", "inf", "nan", "by", "without", "on", "ignoring"}
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_IDENT = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")


def metric_names(expr: str) -> set[str]:
    """Metric (or recorded series) names an expression selects."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'', '""', expr)
    text = re.sub(r"\{[^}]*\}", " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)
    text = _GROUPING.sub(" ", text)
    text = re.sub(r"\b(?:group_left|group_right)\b", " ", text)
    text = re.sub(r"\boffset\s+\S+", " ", text)
    names = set()
    for match in _IDENT.finditer(text):
        word, start = match.group(), match.start()
        if start and (text[start - 1].isdigit() or text[start - 1] in ".$"):
            continue  # the exponent of a number, or a Grafana variable
        if text[match.end() :].lstrip().startswith("(") or word.lower() in _KEYWORDS:
            continue
        names.add(word)
    return names


def _sample_names(family: Metric) -> set[str]:
    name = family.name
    suffixes = {
        "counter": ("_total", "_created"),
        "histogram": ("_bucket", "_count", "_sum", "_created"),
        "summary": ("", "_count", "_sum", "_created"),
        "info": ("_info",),
    }.get(family.type, ("",))
    return {name + suffix for suffix in suffixes}


def exported_names(registries: Iterable[CollectorRegistry]) -> set[str]:
    """Every series name the registries can export (a family's samples, even before it has any)."""
    return {
        name for registry in registries for family in registry.collect() for name in _sample_names(family)
    }
