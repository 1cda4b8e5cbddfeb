"""Routing rules: which pipelines run on a study and which destinations receive its results."""
from __future__ import annotations

import re

from dicomnode.config import Config, RouteConfig


def _matches(pattern: str | None, value: object) -> bool:
    if pattern is None:
        return True
    return re.fullmatch(pattern, "" if value is None else str(value)) is not None


def route_matches(route: RouteConfig, calling_ae: str | None, datasets: list) -> bool:
    """A route matches when its calling-AE regex matches (None: not checked) and any instance matches the rest."""
    match = route.match
    if calling_ae is not None and not _matches(match.calling_ae, calling_ae):
        return False
    if match.modality is None and not match.tags:
        return True
    for dataset in datasets:
        if not _matches(match.modality, dataset.get("Modality")):
            continue
        if all(_matches(pattern, dataset.get(keyword)) for keyword, pattern in match.tags.items()):
            return True
    return False


def select_route(config: Config, calling_ae: str | None, datasets: list) -> RouteConfig | None:
    """The first matching route, or None: the study is kept but not analysed."""
    for route in config.routes:
        if route_matches(route, calling_ae, datasets):
            return route
    return None
