"""Small spec objects group the options of the data functions; `with_fields` lets a caller give a spec's
fields by name instead (DeviceLoader(..., flip=True) for augment=Augmentation(flip=True))."""

from __future__ import annotations

import dataclasses
from typing import Any


def with_fields(specs: list[Any], fields: dict[str, Any], who: str) -> list[Any]:
    """`specs` (dataclass instances) with `fields` set on the one that has each field; a name that none of
    them has is a TypeError, as an unknown keyword argument would be."""
    out = list(specs)
    for name, value in fields.items():
        owner = next((i for i, spec in enumerate(out) if name in {f.name for f in dataclasses.fields(spec)}), None)
        if owner is None:
            raise TypeError(f"{who}() got an unexpected keyword argument {name!r}")
        out[owner] = dataclasses.replace(out[owner], **{name: value})
    return out
