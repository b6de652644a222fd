"""What the provisioning mutations share."""

from __future__ import annotations

import contextlib
from typing import TypeVar

import strawberry
from strawberry.dataloader import DataLoader

from models import provisioning
from models.ids import encode_id
from schema.errors import AlreadyExists

T = TypeVar("T")


def already_exists(exc: provisioning.AlreadyExistsError, type_name: str) -> AlreadyExists:
    return AlreadyExists(
        message=str(exc), field=exc.field, existing_id=strawberry.ID(encode_id(type_name, exc.existing_id))
    )


def checked_metadata(value: object) -> provisioning.Metadata | None:
    """Metadata that ``validation.check_metadata`` accepted: a dict, or ``None``."""
    assert value is None or isinstance(value, dict)
    return value


def forget(loader: DataLoader[int, T], pk: int) -> None:
    """Drop a row this request may have loaded before changing it (a document with several mutations)."""
    with contextlib.suppress(KeyError):
        loader.clear(pk)
