"""Typed worker arguments: the shape a Worker declares with ``args_type``, checked by msgspec.

A worker may declare ``args_type = SomeType`` where SomeType is a ``msgspec.Struct``, a
``dataclass`` (or attrs class) or a ``TypedDict``. Enqueue then refuses arguments that
do not convert to it, and the executor discards a stored job whose arguments no longer
do. Validation is msgspec's (``msgspec.convert(..., strict=True)``); on top of it, a
top-level field the type does not declare is refused, whatever the kind of type.
"""

from __future__ import annotations

from typing import Any

import msgspec
import msgspec.inspect as mi

from .errors import InvalidArgumentsError

_OBJECT_TYPES = (mi.StructType, mi.DataclassType, mi.TypedDictType)


def _unsupported(node: mi.Type, seen: set[int]) -> mi.CustomType | None:
    """The first type inside ``node`` that msgspec cannot build from JSON, if any."""
    if id(node) in seen:  # recursive types refer back to themselves
        return None
    seen.add(id(node))
    if isinstance(node, mi.CustomType):
        return None if node.cls is object else node  # `object` accepts any JSON value
    for name in node.__struct_fields__:
        value = getattr(node, name)
        for item in value if isinstance(value, tuple) else (value,):
            child = item.type if isinstance(item, mi.Field) else item
            found = _unsupported(child, seen) if isinstance(child, mi.Type) else None
            if found is not None:
                return found
    return None


class ArgsSpec:
    """The compiled ``args_type`` of one Worker class: what enqueue and the executor check.

    Built once when the class is defined (:meth:`compile`), so a type msgspec cannot
    handle is a TypeError there, not a surprise at the first enqueue.
    """

    __slots__ = ("_instance_types", "fields", "type")

    def __init__(self, type_: Any, fields: frozenset[str], instance_types: tuple[type, ...]) -> None:
        self.type = type_
        self.fields = fields
        self._instance_types = instance_types

    @classmethod
    def compile(cls, type_: Any, owner: str) -> ArgsSpec:
        """Check that ``type_`` is an object type msgspec can convert JSON into.

        ``owner`` names the worker class in the TypeError raised otherwise.
        """
        where = f"{owner}.args_type"
        try:
            info = mi.type_info(type_)
        except (TypeError, NameError) as exc:
            raise TypeError(f"{where}: {type_!r} is not a type msgspec can validate: {exc}") from None
        if not isinstance(info, _OBJECT_TYPES):
            raise TypeError(
                f"{where} must be a msgspec.Struct, a dataclass or a TypedDict "
                f"(job arguments are a JSON object), got {type_!r}"
            )
        if isinstance(info, mi.StructType) and info.array_like:
            raise TypeError(f"{where}: array_like Structs are not supported (job arguments are a JSON object)")
        bad = _unsupported(info, set())
        if bad is not None:
            raise TypeError(f"{where}: {type_!r} uses {bad.cls!r}, which msgspec cannot build from JSON")
        instance_types = () if isinstance(info, mi.TypedDictType) else (type_,)
        return cls(type_, frozenset(f.encode_name for f in info.fields), instance_types)

    def convert(self, args: Any, worker: str) -> Any:
        """``args`` (decoded JSON) as an instance of the type; InvalidArgumentsError naming
        ``worker`` and the field when they do not match."""
        try:
            value = msgspec.convert(args, type=self.type, strict=True)
        except msgspec.ValidationError as exc:
            raise InvalidArgumentsError(f"arguments of {worker}: {exc}") from None
        if type(args) is dict and not args.keys() <= self.fields:
            unknown = min(set(args) - self.fields)
            raise InvalidArgumentsError(f"arguments of {worker}: Object contains unknown field `{unknown}`")
        return value

    def to_json_args(self, args: Any) -> Any:
        """An instance of the type as its JSON form (a dict); any other value unchanged."""
        if self._instance_types and isinstance(args, self._instance_types):
            return msgspec.to_builtins(args)
        return args


__all__ = ["ArgsSpec"]
