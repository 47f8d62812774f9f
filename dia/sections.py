"""Config sections and how one is resolved: the stage sections of :mod:`dia.config` and each
baseline's own (``kdad``, ``rd4ad``, ...), built from the preset and the workflow's layers; and
the parts of the config schema the registries decide (sources, baselines and their sections,
written from their config dataclasses), so that a new source or baseline needs no schema edit.

It sits above both :mod:`dia.config` and :mod:`dia.baselines`, whose configs subclass
:class:`~dia.config.BaselineConfig`, so neither imports the other.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from typing import Any

from dia.baselines import BASELINES, config_class
from dia.config import (
    LITERALS,
    ContrastiveConfig,
    DiffusionConfig,
    DissolveConfig,
    ScoreConfig,
    preset,
)
from dia.data.registry import SOURCES
from dia.errors import DiaError

SECTIONS = {
    "diffusion": DiffusionConfig,
    "dissolve": DissolveConfig,
    "contrastive": ContrastiveConfig,
    "score": ScoreConfig,
}


def config_sections() -> tuple[str, ...]:
    """Sections a config layer may hold: one per stage and one per registered baseline."""
    return (*SECTIONS, *BASELINES)


def section_class(section: str) -> Any:
    """Config dataclass of a stage section or of a baseline (``kdad``, ``rd4ad``, ...)."""
    if section in SECTIONS:
        return SECTIONS[section]
    if section in BASELINES:
        return config_class(section)
    raise DiaError(f"unknown config section {section!r}")


def resolve(section: str, preset_name: str, layers: list[Mapping[str, Any]]) -> Any:
    """Build one stage config: preset values, then each layer's ``section`` subtree in order.

    The workflow passes the layers global -> dataset -> method, so a dataset can set its input
    size and a method its own switches without repeating the rest.
    """
    cls = section_class(section)
    merged: dict[str, Any] = dict(preset(preset_name).get(section, {}))
    for layer in layers:
        merged.update((layer or {}).get(section) or {})
    return cls.from_dict(merged, where=section)


_JSON_TYPES = {"int": "integer", "float": "number", "bool": "boolean", "str": "string"}


def field_schema(annotation: str) -> dict[str, Any]:
    """JSON schema of a config field from its annotation: a scalar, ``X | None``, a tuple (a YAML
    list) or a ``Literal`` alias of :mod:`dia.config` (an enum)."""
    if annotation in LITERALS:
        return {"enum": list(LITERALS[annotation])}
    if annotation.endswith(" | None"):
        inner = field_schema(annotation.removesuffix(" | None"))
        return {**inner, "type": [inner["type"], "null"]}
    if tuple_of := re.fullmatch(r"tuple\[(\w+)(?:, .*)?\]", annotation):
        return {"type": "array", "items": field_schema(tuple_of[1])}
    if annotation not in _JSON_TYPES:
        raise TypeError(f"no JSON schema for a config field annotated {annotation!r}")
    return {"type": _JSON_TYPES[annotation]}


def section_schema(cls: type) -> dict[str, Any]:
    """The schema of a config dataclass: its fields, nothing else. A field's ``metadata`` (e.g.
    ``minimum``), here or where a base class declares it, is added to its type."""
    properties = {
        f.name: {**field_schema(str(f.type)), **_metadata(cls, f.name)}
        for f in dataclasses.fields(cls)
    }
    return {
        "description": (cls.__doc__ or "").split("\n")[0],
        "type": "object",
        "additionalProperties": False,
        "properties": properties,
    }


def _metadata(cls: type, name: str) -> dict[str, Any]:
    """Metadata of field ``name`` from ``cls`` and its bases (a subclass that only changes the
    default keeps its base's constraints)."""
    out: dict[str, Any] = {}
    for base in reversed(cls.__mro__):
        if dataclasses.is_dataclass(base):
            out |= next((dict(f.metadata) for f in dataclasses.fields(base) if f.name == name), {})
    return out


def mentioned_baselines(config: Mapping[str, Any]) -> set[str]:
    """Baselines a config names: as a method's ``model`` or as a section anywhere. Read before
    the schema has checked the config, so anything malformed is skipped, not tripped over."""

    def mapping(value: Any) -> Mapping[str, Any]:
        return value if isinstance(value, Mapping) else {}

    methods = list(mapping(config.get("methods")).values())
    layers = [config, *mapping(config.get("datasets")).values(), *methods]
    named = {str(mapping(m).get("model")) for m in methods}
    named |= {str(key) for layer in layers for key in mapping(layer)}
    return named & set(BASELINES)


def complete_schema(schema: dict[str, Any], config: Mapping[str, Any]) -> dict[str, Any]:
    """``schema`` (workflow/schemas/config.schema.yaml) with what the registries decide: the
    dataset ``source`` enum (:data:`dia.data.registry.SOURCES`), the ``model`` enum and a section
    for each baseline wherever a config layer may hold one. Only the baselines ``config`` names
    are imported (they import torch); any other baseline's section accepts nothing but ``{}``."""
    mentioned = mentioned_baselines(config)
    defs = {
        **schema["$defs"],
        "dataset": _with_sections(_with_enum(schema["$defs"]["dataset"], "source", SOURCES)),
        "method": _with_sections(_with_enum(schema["$defs"]["method"], "model", BASELINES)),
    }
    for name in BASELINES:
        if name in mentioned:
            defs[name] = section_schema(config_class(name))
        else:
            defs[name] = {"type": "object", "maxProperties": 0}
    return {**_with_sections(schema), "$defs": defs}


def _with_sections(holder: dict[str, Any]) -> dict[str, Any]:
    sections = {name: {"$ref": f"#/$defs/{name}"} for name in BASELINES}
    return {**holder, "properties": {**holder["properties"], **sections}}


def _with_enum(holder: dict[str, Any], key: str, names: Mapping[str, Any]) -> dict[str, Any]:
    prop = {**holder["properties"][key], "enum": list(names)}
    return {**holder, "properties": {**holder["properties"], key: prop}}
