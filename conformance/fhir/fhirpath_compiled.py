"""FHIRPath compiled to Python closures, for the invariants of the profiles the validator checks.

``try_compile(expression)`` parses an expression once with fhirpathpy's ANTLR parser and turns the
tree into nested closures, specialised (lazily, once per context type) by the FHIR type of the
context node, so that an evaluation neither walks a tree nor builds dictionaries. The supported
subset of FHIRPath N1 over FHIR R4 JSON is: member navigation (arrays flattened, choice elements
``value`` -> ``valueString``/``valueCodeableConcept``..., primitives merged with their ``_name``
companion, a leading type name such as ``Identifier.where(...)`` checked against the context);
literals (boolean, string, number, date/time, ``{}``); ``%resource``, ``%rootResource``,
``%context``, ``%ucum``, ``%sct``, ``%loinc``, ``$this``, ``$index``; the operators ``.`` ``[]``
``and or xor implies`` (three-valued), ``= != ~ !~ < <= > >=``, ``in contains``, ``|``, ``+ - * /
div mod &``, ``is as``; the functions ``exists empty not count where select all first last tail
skip take single distinct isDistinct iif allTrue anyTrue allFalse anyFalse union combine intersect
exclude matches replaceMatches startsWith endsWith contains indexOf length substring lower upper
trim toString toInteger hasValue extension children descendants ofType as is resolve memberOf
trace htmlChecks``. Anything else (quantity literals, ``aggregate``, ``repeat``, date arithmetic,
``today()``...) makes ``try_compile`` return None and the caller falls back to the interpreter.
``matches`` finds the regex anywhere in the string (FHIRPath 3.0 made this explicit and added
``matchesFull`` for whole-string matching). Deliberate choices, where the interpreter or the letter
of N1 differ: ``as`` filters a collection
(as the HL7 validator does, which dom-3 relies on) instead of failing on several items;
``hasValue()`` is false, never empty, for anything but one primitive with a value (as the HL7
validator; otherwise per-1 could never pass); ``htmlChecks()`` is true; dates and times compare
part by part down to the coarser precision (equal so far but of different precisions: empty), two
dateTimes with times after normalising to UTC (no timezone: UTC), a date against a dateTime as
written; a primitive's value is not listed by ``children()``; results are plain JSON values, a
primitive that only has extensions being returned as its ``_name`` object.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal, InvalidOperation
from functools import lru_cache
from typing import Any, Protocol

import orjson

__all__ = [
    "FhirPathEvaluationError",
    "Hooks",
    "Node",
    "SimpleHooks",
    "try_compile",
    "try_compile_predicate",
]


class FhirPathEvaluationError(Exception):
    """An expression cannot be evaluated on this input (the N1 spec says: signal an error)."""


class Hooks(Protocol):
    """What an evaluation needs from its caller: the resources around the node and two services."""

    resource: Any
    root_resource: Any
    node_type: str | None

    def resolve(self, reference: str) -> dict | None:
        """The resource a (non-contained) reference or canonical points to, or None."""
        ...

    def member_of(self, node: object, valueset: str) -> bool | None:
        """Whether a code, Coding or CodeableConcept (plain JSON) is in a value set; None if unknown."""
        ...


@dataclass
class SimpleHooks:
    """A ready-made ``Hooks``: resolution and terminology are optional callables."""

    resource: Any = None
    root_resource: Any = None
    node_type: str | None = None
    resolver: Callable[[str], dict | None] | None = None
    terminology: Callable[[object, str], bool | None] | None = None

    def resolve(self, reference: str) -> dict | None:
        """Delegate to ``resolver`` (None without one)."""
        return self.resolver(reference) if self.resolver is not None else None

    def member_of(self, node: object, valueset: str) -> bool | None:
        """Delegate to ``terminology`` (None, i.e. unknown, without one)."""
        return self.terminology(node, valueset) if self.terminology is not None else None


class Node:
    """An item that carries its FHIR type: a primitive with its ``_name`` object, or a typed value.

    ``value`` is the JSON value (None for a primitive that only has extensions), ``ext`` the
    primitive's ``_name`` companion object (id and extensions) or None, ``type`` the FHIR type
    name (``"string"``, ``"CodeableConcept"``, a backbone path such as ``"Immunization.performer"``)
    or a System type (``"System.String"``...). Callers may pass one as the context node.
    """

    __slots__ = ("ext", "type", "value")

    def __init__(self, value: Any, ext: dict | None = None, type: str | None = None) -> None:
        self.value = value
        self.ext = ext
        self.type = type

    def __repr__(self) -> str:
        return f"Node({self.value!r}, ext={self.ext!r}, type={self.type!r})"


class _Unsupported(Exception):
    """The expression uses something outside the compiled subset."""


# -- the R4 type model -------------------------------------------------------------------------

_SYSTEM_TYPES = {
    "Boolean",
    "String",
    "Integer",
    "Decimal",
    "Date",
    "DateTime",
    "Time",
    "Quantity",
}
_DATE_TYPES = frozenset({"date", "dateTime", "instant", "System.Date", "System.DateTime"})
_TIME_TYPES = frozenset({"time", "System.Time"})
_ABSTRACT_CONTEXT = frozenset({"Resource", "DomainResource"})


class _Member:
    """How to read one child element of a type from JSON."""

    __slots__ = ("choices", "key", "kind", "type", "ukey")

    def __init__(self, key: str, kind: str, type_: str | None, choices: dict | None = None) -> None:
        self.key = key
        self.ukey = "_" + key
        self.kind = kind  # "complex", "primitive", "choice", "absent" (not in the model), "generic"
        self.type = type_  # child type, None when the child describes itself or is unknown
        self.choices = choices  # json key (and "_" + json key) -> (json key, type)


class _Model:
    """Type facts from fhirpathpy's R4 model (path2Type, choiceTypePaths, type2Parent ...)."""

    def __init__(self) -> None:
        from fhirpathpy.models import models

        model = models["r4"]
        self.path2type: dict[str, str] = model["path2Type"]
        self.choice_paths: dict[str, list[str]] = model["choiceTypePaths"]
        self.elsewhere: dict[str, str] = model["pathsDefinedElsewhere"]
        self.parent: dict[str, str] = model["type2Parent"]
        self.primitives = {t for t in self.parent if t[0].islower()} | {"xhtml"}
        self.backbone: set[str] = set()
        for path in list(self.path2type) + list(self.choice_paths):
            parts = path.split(".")
            for i in range(2, len(parts)):
                prefix = ".".join(parts[:i])
                if prefix not in self.path2type:
                    self.backbone.add(prefix)
        self.types = set(self.parent) | {t for t in self.parent.values() if t} | {"Element", "Resource"}
        index: dict[str, dict[str, str]] = {}
        for path, type_ in self.path2type.items():
            parent, _, name = path.rpartition(".")
            index.setdefault(parent, {})[name] = type_
        for path in self.backbone:
            parent, _, name = path.rpartition(".")
            index.setdefault(parent, {}).setdefault(name, path)
        for path, target in self.elsewhere.items():
            parent, _, name = path.rpartition(".")
            index.setdefault(parent, {})[name] = self.path2type.get(target, target)
        self._children_index = index
        self.subtyped = {t for t in self.parent.values() if t}
        self._members: dict[tuple[str | None, str], _Member] = {}
        self._cmaps: dict[str | None, dict[str, str]] = {}
        self._isa: dict[tuple[str | None, str], bool] = {}
        self.choice_suffixes = {s: self.suffix_type(s) for v in self.choice_paths.values() for s in v}

    def suffix_type(self, suffix: str) -> str:
        """``DateTime`` -> ``dateTime``; ``CodeableConcept`` stays."""
        lowered = suffix[0].lower() + suffix[1:]
        return lowered if lowered in self.primitives else suffix

    def is_primitive(self, type_: str | None) -> bool:
        """True for FHIR primitive and System type names."""
        return type_ is not None and (type_[0].islower() or type_.startswith("System."))

    def ancestors(self, type_: str | None) -> list[str]:
        """The type itself and its supertypes, nearest first."""
        out: list[str] = []
        while type_:
            out.append(type_)
            if type_ in self.parent:
                type_ = self.parent[type_]
            elif "." in type_ and not type_.startswith("System."):
                type_ = "BackboneElement"
            else:
                type_ = None
        return out

    def member(self, type_: str | None, name: str) -> _Member:
        """How to read child ``name`` of a node of ``type_`` (None: unknown type)."""
        key = (type_, name)
        found = self._members.get(key)
        if found is None:
            found = self._members[key] = self._member(type_, name)
        return found

    def _member(self, type_: str | None, name: str) -> _Member:
        for anc in self.ancestors(type_):
            path = anc + "." + name
            path = self.elsewhere.get(path, path)
            suffixes = self.choice_paths.get(path)
            if suffixes:
                choices: dict[str, tuple[str, str]] = {}
                for s in suffixes:
                    json_key = name + s
                    choices[json_key] = choices["_" + json_key] = (json_key, self.suffix_type(s))
                return _Member(name, "choice", None, choices)
            child = self.path2type.get(path)
            if child is not None:
                if child == "Resource":
                    return _Member(name, "complex", None)
                return _Member(name, "primitive" if self.is_primitive(child) else "complex", child)
            if path in self.backbone:
                return _Member(name, "complex", path)
        if self.is_known(type_):
            return _Member(name, "absent", None)  # not in the model: read the key as it is
        return _Member(name, "generic", None)

    def is_known(self, type_: str | None) -> bool:
        """Whether the model describes a type (so that its members need no guessing)."""
        return type_ is not None and (
            type_ in self.parent
            or type_ in self.backbone
            or type_.startswith("System.")
            or type_ in ("Element", "Resource", "BackboneElement")
        )

    def children_map(self, type_: str | None) -> dict[str, str]:
        """JSON key -> child type for a type (choice keys such as ``valueString`` included)."""
        found = self._cmaps.get(type_)
        if found is None:
            found = {}
            for anc in reversed(self.ancestors(type_)):
                found.update(self._children_index.get(anc, {}))
            self._cmaps[type_] = found
        return found

    def is_a(self, actual: str | None, target: str) -> bool:
        """Whether a node of type ``actual`` is a ``target`` (a FHIR name or ``System.X``)."""
        key = (actual, target)
        found = self._isa.get(key)
        if found is None:
            if actual is None:
                found = False
            elif target.startswith("System.") or actual.startswith("System."):
                found = actual == target
            else:
                found = target in self.ancestors(actual) or (
                    target == "BackboneElement" and "." in actual and actual not in self.parent
                )
            self._isa[key] = found
        return found

    def resolve_type_name(self, text: str) -> str:
        """A type specifier (``Quantity``, ``FHIR.string``, ``System.Boolean``) as a target name."""
        text = text.replace("`", "")
        namespace, _, name = text.rpartition(".")
        if namespace == "System":
            if name not in _SYSTEM_TYPES:
                raise _Unsupported(f"unknown System type {name}")
            return "System." + name
        if namespace not in ("", "FHIR"):
            raise _Unsupported(f"unknown type namespace {namespace}")
        if name in self.types or name in ("BackboneElement", "DomainResource"):
            return name
        if not namespace and name in _SYSTEM_TYPES:
            return "System." + name
        raise _Unsupported(f"unknown type {text}")


@lru_cache(maxsize=1)
def _model() -> _Model:
    return _Model()


# -- items, types and values ------------------------------------------------------------------

_TRUE: list = [True]
_FALSE: list = [False]
_EMPTY: list = []


def _type_of(item: Any, static: str | None) -> str | None:
    """The FHIR or System type of one item of a collection whose static type is ``static``."""
    kind = type(item)
    if kind is Node:
        return item.type
    if kind is dict:
        rtype = item.get("resourceType")
        return rtype if isinstance(rtype, str) else static
    if static is not None:
        return static
    if kind is str:
        return "System.String"
    if kind is bool:
        return "System.Boolean"
    if kind is int:
        return "System.Integer"
    if kind is float or kind is Decimal:
        return "System.Decimal"
    return None


def _value(item: Any) -> Any:
    return item.value if type(item) is Node else item


def _data(item: Any) -> Any:
    """The JSON object to navigate into: the dict itself, or a primitive's ``_name`` object."""
    if type(item) is Node:
        value = item.value
        return value if type(value) is dict else item.ext
    return item


def _wrap(items: list, static: str | None) -> list:
    """Make raw items of a statically typed collection self-describing."""
    if static is None:
        return items
    out = []
    for item in items:
        if type(item) is Node or (type(item) is dict and "resourceType" in item):
            out.append(item)
        else:
            out.append(Node(item, None, static))
    return out


def _num(value: Any) -> Any:
    return Decimal(repr(value)) if type(value) is float else value


def _is_number(value: Any) -> bool:
    kind = type(value)
    return kind is int or kind is float or kind is Decimal


def _key(item: Any) -> tuple:
    """A hashable key with FHIRPath equality (for distinct, union, intersect)."""
    value = _value(item)
    kind = type(value)
    if kind is str:
        return ("s", value)
    if kind is bool:
        return ("b", value)
    if kind is int or kind is Decimal:
        return ("n", value)
    if kind is float:
        return ("n", Decimal(repr(value)))
    if value is None and type(item) is Node:
        return ("e", orjson.dumps(item.ext, option=orjson.OPT_SORT_KEYS))
    return ("d", orjson.dumps(value, option=orjson.OPT_SORT_KEYS, default=str))


def _distinct(items: list) -> list:
    seen: set = set()
    out = []
    for item in items:
        key = _key(item)
        if key not in seen:
            seen.add(key)
            out.append(item)
    return out


_DT_RE = re.compile(
    r"(\d{4})(?:-(\d{2})(?:-(\d{2})(?:T(\d{2})(?::(\d{2})(?::(\d{2})(?:\.(\d+))?)?)?"
    r"(Z|[+-]\d{2}:\d{2})?)?)?)?"
)
_TIME_RE = re.compile(r"T?(\d{2})(?::(\d{2})(?::(\d{2})(?:\.(\d+))?)?)?(Z|[+-]\d{2}:\d{2})?")


@lru_cache(maxsize=4096)
def _date_parts(text: str) -> tuple[tuple, tuple | None] | None:
    """Date/dateTime/instant as comparable parts down to its precision: as written, and (when it
    has a time) normalised to UTC, a time without a timezone being taken as UTC."""
    match = _DT_RE.fullmatch(text)
    if match is None:
        return None
    year, month, day, hour, minute, second, fraction, zone = match.groups()
    parts: list = [int(year)]
    if month:
        parts.append(int(month))
    if day:
        parts.append(int(day))
    if hour is None:
        return tuple(parts), None
    seconds = Decimal(second + ("." + fraction if fraction else "")) if second else None
    local = [*parts, int(hour)]
    offset = 0
    if zone and zone != "Z":
        offset = (int(zone[1:3]) * 60 + int(zone[4:6])) * (1 if zone[0] == "+" else -1)
    try:
        moment = datetime(int(year), int(month), int(day), int(hour), int(minute or 0))
    except ValueError:
        return None
    moment -= timedelta(minutes=offset)
    utc = [moment.year, moment.month, moment.day, moment.hour]
    if minute:
        local.append(int(minute))
        utc.append(moment.minute)
        if seconds is not None:
            local.append(seconds)
            utc.append(seconds)
    return tuple(local), tuple(utc)


@lru_cache(maxsize=1024)
def _time_parts(text: str) -> tuple | None:
    match = _TIME_RE.fullmatch(text)
    if match is None:
        return None
    hour, minute, second, fraction, _zone = match.groups()
    parts: list = [int(hour)]
    if minute:
        parts.append(int(minute))
        if second:
            parts.append(Decimal(second + ("." + fraction if fraction else "")))
    return tuple(parts)


def _partial_compare(a: tuple, b: tuple) -> int | None:
    """-1/0/1, or None when equal to the shorter precision but the precisions differ."""
    for x, y in zip(a, b, strict=False):
        if x != y:
            return -1 if x < y else 1
    return 0 if len(a) == len(b) else None


def _temporal(a: Any, ta: str | None, b: Any, tb: str | None) -> tuple | None:
    """Parsed parts of two date/time operands, or None when they are not both temporal."""
    if type(a) is not str or type(b) is not str:
        return None
    if ta in _DATE_TYPES or tb in _DATE_TYPES:
        da, db = _date_parts(a), _date_parts(b)
        if da is None or db is None:
            return None
        if da[1] is not None and db[1] is not None:
            return da[1], db[1]  # both have a time: compare instants
        return da[0], db[0]  # a date: no timezone to normalise against, compare as written
    elif ta in _TIME_TYPES or tb in _TIME_TYPES:
        pa, pb = _time_parts(a), _time_parts(b)
    else:
        return None
    if pa is None or pb is None:
        return None
    return pa, pb


def _item_equal(a: Any, ta: str | None, b: Any, tb: str | None) -> bool | None:
    """FHIRPath ``=`` on two single items (None: empty, e.g. dates of different precision)."""
    if type(a) is Node:
        ta, a = a.type, a.value
    if type(b) is Node:
        tb, b = b.type, b.value
    if a is None or b is None:
        return None  # a primitive with only extensions has no value to compare
    kind_a, kind_b = type(a), type(b)
    if kind_a is str and kind_b is str:
        if ta in _DATE_TYPES or tb in _DATE_TYPES or ta in _TIME_TYPES or tb in _TIME_TYPES:
            parsed = _temporal(a, ta, b, tb)
            if parsed is not None:
                result = _partial_compare(*parsed)
                return None if result is None else result == 0
        return a == b
    if kind_a is bool or kind_b is bool:
        return kind_a is kind_b and a == b
    if _is_number(a) and _is_number(b):
        return _num(a) == _num(b)
    if kind_a is dict and kind_b is dict:
        return a == b
    return False


def _equal(left: list, lt: str | None, right: list, rt: str | None) -> bool | None:
    if len(left) != len(right):
        return False
    result: bool | None = True
    for a, b in zip(left, right, strict=True):
        one = _item_equal(a, lt, b, rt)
        if one is False:
            return False
        if one is None:
            result = None
    return result


def _normal_text(text: str) -> str:
    return " ".join(text.lower().split())


def _decimals(value: Decimal) -> int:
    exponent = value.normalize().as_tuple().exponent
    return -exponent if isinstance(exponent, int) and exponent < 0 else 0


def _item_equivalent(a: Any, ta: str | None, b: Any, tb: str | None) -> bool:
    if type(a) is Node:
        ta, a = a.type, a.value
    if type(b) is Node:
        tb, b = b.type, b.value
    if a is None or b is None:
        return a is None and b is None
    kind_a, kind_b = type(a), type(b)
    if kind_a is str and kind_b is str:
        parsed = _temporal(a, ta, b, tb)
        if parsed is not None:
            return len(parsed[0]) == len(parsed[1]) and parsed[0] == parsed[1]
        return _normal_text(a) == _normal_text(b)
    if kind_a is bool or kind_b is bool:
        return kind_a is kind_b and a == b
    if _is_number(a) and _is_number(b):
        x, y = Decimal(_num(a)), Decimal(_num(b))
        places = min(_decimals(x), _decimals(y))
        quantum = Decimal(1).scaleb(-places)
        return x.quantize(quantum) == y.quantize(quantum)
    if kind_a is dict and kind_b is dict:
        return a == b
    return False


def _equivalent(left: list, lt: str | None, right: list, rt: str | None) -> bool:
    if len(left) != len(right):
        return False
    remaining = list(right)
    for a in left:
        for i, b in enumerate(remaining):
            if _item_equivalent(a, lt, b, rt):
                del remaining[i]
                break
        else:
            return False
    return True


def _single(items: list, what: str) -> Any:
    """The one item of a collection (None when empty); several items are an error."""
    if not items:
        return None
    if len(items) > 1:
        raise FhirPathEvaluationError(f"{what} expects a single item, got {len(items)}")
    return items[0]


def _compare(left: list, lt: str | None, right: list, rt: str | None) -> int | None:
    a = _single(left, "comparison")
    b = _single(right, "comparison")
    if a is None or b is None:
        return None
    if type(a) is Node:
        lt, a = a.type, a.value
    if type(b) is Node:
        rt, b = b.type, b.value
    if a is None or b is None:
        return None
    if type(a) is str and type(b) is str:
        parsed = _temporal(a, lt, b, rt)
        if parsed is not None:
            return _partial_compare(*parsed)
        return -1 if a < b else (1 if a > b else 0)
    if _is_number(a) and _is_number(b) and type(a) is not bool and type(b) is not bool:
        x, y = _num(a), _num(b)
        return -1 if x < y else (1 if x > y else 0)
    if type(a) is dict and type(b) is dict and _is_number(a.get("value")) and _is_number(b.get("value")):
        unit_a = a.get("code", a.get("unit"))
        unit_b = b.get("code", b.get("unit"))
        if unit_a == unit_b and a.get("system") == b.get("system"):
            x, y = _num(a["value"]), _num(b["value"])
            return -1 if x < y else (1 if x > y else 0)
        raise FhirPathEvaluationError(f"cannot compare quantities in {unit_a!r} and {unit_b!r}")
    raise FhirPathEvaluationError(f"cannot compare {a!r} with {b!r}")


def _b3(items: list) -> bool | None:
    """Singleton evaluation of a collection as a Boolean: True, False or None (empty)."""
    n = len(items)
    if n == 0:
        return None
    if n == 1:
        item = items[0]
        if item is True or item is False:
            return item
        if type(item) is Node and (item.value is True or item.value is False):
            return item.value
        return True
    raise FhirPathEvaluationError(f"expected a single Boolean, got {n} items")


def _strict_bool(item: Any) -> bool:
    value = _value(item)
    if value is True or value is False:
        return value
    raise FhirPathEvaluationError(f"expected a Boolean, got {value!r}")


def _string_input(items: list, function: str) -> str | None:
    item = _single(items, function + "()")
    if item is None:
        return None
    value = _value(item)
    if value is None:
        return None
    if type(value) is not str:
        raise FhirPathEvaluationError(f"{function}() expects a string, got {value!r}")
    return value


def _to_string(value: Any) -> str | None:
    kind = type(value)
    if kind is str:
        return value
    if kind is bool:
        return "true" if value else "false"
    if kind is int or kind is Decimal:
        return str(value)
    if kind is float:
        return str(Decimal(repr(value)))
    return None


@lru_cache(maxsize=512)
def _regex(pattern: str) -> re.Pattern:
    try:
        return re.compile(pattern, re.DOTALL)
    except re.error as exc:
        raise FhirPathEvaluationError(f"invalid regular expression {pattern!r}: {exc}") from exc


# -- navigation -------------------------------------------------------------------------------


def _collect(member: _Member, data: dict, out: list, wrap: bool) -> None:
    """Append the children ``member`` names in ``data``; ``wrap`` gives every child its type."""
    kind = member.kind
    if kind == "choice":
        choices = member.choices
        assert choices is not None
        found = None
        if len(data) < len(choices):
            for key in data:
                found = choices.get(key)
                if found is not None:
                    break
        else:
            for key in choices:
                if key in data:
                    found = choices[key]
                    break
        if found is not None:
            json_key, child_type = found
            value = data.get(json_key)
            out.append(Node(value, data.get("_" + json_key), child_type))
        return
    key = member.key
    child_type = member.type
    value = data.get(key)
    ext = data.get(member.ukey) if kind != "complex" else None
    if kind == "generic" and value is None and ext is None:
        model = _model()
        for json_key in data:
            if json_key.startswith(key) and len(json_key) > len(key) and json_key[len(key)].isupper():
                suffix_type = model.choice_suffixes.get(json_key[len(key) :])
                if suffix_type is not None:
                    out.append(Node(data[json_key], data.get("_" + json_key), suffix_type))
                    return
            if json_key.startswith("_" + key) and json_key[len(key) + 1 :] in model.choice_suffixes:
                base = json_key[1:]
                if base not in data:
                    suffix_type = model.choice_suffixes[json_key[len(key) + 1 :]]
                    out.append(Node(None, data[json_key], suffix_type))
                    return
        return
    if ext is None:
        if value is None:
            return
        if type(value) is list:
            if wrap and child_type is not None:
                for v in value:
                    if v is not None:
                        out.append(
                            v if type(v) is dict and "resourceType" in v else Node(v, None, child_type)
                        )
            else:
                for v in value:
                    if v is not None:
                        out.append(v)
        elif wrap and child_type is not None and not (type(value) is dict and "resourceType" in value):
            out.append(Node(value, None, child_type))
        else:
            out.append(value)
        return
    if type(value) is list or type(ext) is list:
        values = value if type(value) is list else ([] if value is None else [value])
        exts = ext if type(ext) is list else [ext]
        for i in range(max(len(values), len(exts))):
            v = values[i] if i < len(values) else None
            e = exts[i] if i < len(exts) else None
            if e is not None:
                out.append(Node(v, e, child_type))
            elif v is not None:
                out.append(Node(v, None, child_type) if wrap and child_type is not None else v)
        return
    out.append(Node(value, ext, child_type))


def _static_navigator(member: _Member) -> Callable[..., list]:
    """Navigation for a statically known parent type, specialised for the common cases.

    Navigators take ``(items, *ignored)`` so that one function serves as an expression
    ``(this, env)`` and as an invocation ``(input, this, env)``.
    """
    key = member.key
    if member.kind == "complex":

        def nav_complex(items: list, *_: Any) -> list:
            out: list = []
            for item in items:
                data = _data(item) if type(item) is Node else item
                if type(data) is dict:
                    value = data.get(key)
                    if value is not None:
                        if type(value) is list:
                            out.extend(value)
                        else:
                            out.append(value)
            return out

        return nav_complex
    if member.kind == "primitive":
        ukey = member.ukey

        def nav_primitive(items: list, *_: Any) -> list:
            out: list = []
            for item in items:
                data = _data(item) if type(item) is Node else item
                if type(data) is dict:
                    value = data.get(key)
                    if ukey in data:
                        _collect(member, data, out, False)
                    elif value is not None:
                        if type(value) is list:
                            out.extend(v for v in value if v is not None)
                        else:
                            out.append(value)
            return out

        return nav_primitive

    def nav_other(items: list, *_: Any) -> list:
        out: list = []
        for item in items:
            data = _data(item)
            if type(data) is dict:
                _collect(member, data, out, False)
        return out

    return nav_other


def _dynamic_navigator(name: str) -> Callable[..., list]:
    """Navigation where each item tells its own type; every child is given its type."""
    model = _model()
    members: dict[str | None, _Member] = {}

    def nav_dynamic(items: list, *_: Any) -> list:
        out: list = []
        for item in items:
            if type(item) is Node:
                type_ = item.type
                data = item.value
                if type(data) is not dict:
                    data = item.ext
                    if data is None:
                        continue
            elif type(item) is dict:
                data = item
                type_ = item.get("resourceType")
            else:
                continue
            member = members.get(type_)
            if member is None:
                member = members[type_] = model.member(type_, name)
            kind = member.kind
            if kind == "absent" or (kind == "complex" and member.type is None):
                value = data.get(name)
                if value is not None:
                    if type(value) is list:
                        out.extend(value)
                    else:
                        out.append(value)
                continue
            if kind == "complex" or (kind == "primitive" and member.ukey not in data):
                value = data.get(name)
                if value is None:
                    continue
                child_type = member.type
                if type(value) is list:
                    for v in value:
                        if v is not None:
                            out.append(Node(v, None, child_type))
                else:
                    out.append(Node(value, None, child_type))
                continue
            _collect(member, data, out, True)
        return out

    return nav_dynamic


def _children_of(item: Any, static: str | None, out: list) -> None:
    if type(item) is Node:
        type_ = item.type
        data = item.value
        if type(data) is not dict:
            data = item.ext
            if data is None:
                return
    elif type(item) is dict:
        data = item
        type_ = item.get("resourceType") or static
    else:
        return
    cmap = _CHILDREN_MAPS.get(type_)
    if cmap is None:
        cmap = _CHILDREN_MAPS[type_] = _model().children_map(type_)
    has_ext = False
    for key in data:
        if key[0] == "_":
            has_ext = True
            break
    for key, value in data.items():
        if key == "resourceType" or key == "fhir_comments":
            continue
        if has_ext:
            if key[0] == "_":
                base = key[1:]
                if base in data:
                    continue
                child_type = cmap.get(base)
                for e in value if type(value) is list else [value]:
                    if e is not None:
                        out.append(Node(None, e, child_type))
                continue
            ext = data.get("_" + key)
        else:
            ext = None
        child_type = cmap.get(key)
        if type(value) is list:
            exts = ext if type(ext) is list else ()
            for i, v in enumerate(value):
                e = exts[i] if i < len(exts) else None
                if type(v) is dict and "resourceType" in v:
                    out.append(v)
                elif v is not None or e is not None:
                    out.append(Node(v, e, child_type))
        elif type(value) is dict and "resourceType" in value:
            out.append(value)
        else:
            out.append(Node(value, ext, child_type))


_CHILDREN_MAPS: dict[str | None, dict[str, str]] = {}


def _count_children(items: list) -> int:
    """``children().count()`` without building the children."""
    total = 0
    for item in items:
        data = _data(item)
        if type(data) is not dict:
            continue
        for key, value in data.items():
            if key == "resourceType" or key == "fhir_comments":
                continue
            if key[0] == "_":
                base = key[1:]
                if base in data:
                    other = data[base]
                    if type(value) is list and type(other) is list and len(value) > len(other):
                        total += sum(1 for e in value[len(other) :] if e is not None)
                    continue
                total += sum(1 for e in value if e is not None) if type(value) is list else 1
            elif type(value) is list:
                ext = data.get("_" + key)
                if type(ext) is list:
                    total += sum(
                        1
                        for i, v in enumerate(value)
                        if v is not None or (i < len(ext) and ext[i] is not None)
                    )
                else:
                    total += sum(1 for v in value if v is not None)
            elif value is not None or data.get("_" + key) is not None:
                total += 1
    return total


# -- the compiler -----------------------------------------------------------------------------


class _Env:
    """Per-evaluation state: the caller's hooks, the context collection and ``$index``."""

    __slots__ = ("context", "hooks", "index", "memo")

    def __init__(self, hooks: Any, context: list) -> None:
        self.hooks = hooks
        self.context = context
        self.index = 0
        self.memo: dict | None = None


Expr = Callable[[list, _Env], list]  # (this, env) -> collection
Invocation = Callable[[list, list, _Env], list]  # (input, this, env) -> collection

_CONSTANTS = {
    "ucum": "http://unitsofmeasure.org",
    "sct": "http://snomed.info/sct",
    "loinc": "http://loinc.org",
}


def _identifier(node: dict) -> str:
    text = node["terminalNodeText"][0] if node.get("terminalNodeText") else node["text"]
    if text.startswith("`") and text.endswith("`"):
        text = text[1:-1]
    return text


_ESCAPES = {"'": "'", '"': '"', "`": "`", "\\": "\\", "/": "/", "f": "\f", "n": "\n", "r": "\r", "t": "\t"}


def _string_literal(token: str) -> str:
    body = token[1:-1]
    out = []
    i = 0
    while i < len(body):
        char = body[i]
        if char == "\\" and i + 1 < len(body):
            nxt = body[i + 1]
            if nxt == "u" and i + 5 < len(body) and re.fullmatch(r"[0-9a-fA-F]{4}", body[i + 2 : i + 6]):
                out.append(chr(int(body[i + 2 : i + 6], 16)))
                i += 6
                continue
            if nxt in _ESCAPES:
                out.append(_ESCAPES[nxt])
                i += 2
                continue
            raise _Unsupported(f"unknown escape \\{nxt}")
        out.append(char)
        i += 1
    return "".join(out)


def _literal_value(node: dict) -> Any:
    """The value of a string, integer or boolean literal expression, else None."""
    if node.get("type") != "TermExpression":
        return None
    term = node["children"][0]
    if term.get("type") != "LiteralTerm":
        return None
    literal = term["children"][0]
    kind = literal.get("type")
    text = literal["terminalNodeText"][0] if literal.get("terminalNodeText") else ""
    if kind == "StringLiteral":
        return _string_literal(text)
    if kind == "BooleanLiteral":
        return text == "true"
    if kind == "NumberLiteral" and "." not in text:
        return int(text)
    return None


def _contains_type(node: dict, wanted: str) -> bool:
    if node.get("type") == wanted:
        return True
    return any(_contains_type(child, wanted) for child in node.get("children", ()))


def _type_name_text(node: dict) -> str:
    """The text of a type argument given as an expression (``as(canonical)``, ``is(FHIR.string)``)."""
    text = node.get("text") or ""
    if not re.fullmatch(r"[A-Za-z_`][A-Za-z0-9_`]*(\.[A-Za-z_`][A-Za-z0-9_`]*)?", text):
        raise _Unsupported(f"type argument {text!r}")
    return text


_BOOL = "System.Boolean"
_INT = "System.Integer"
_STR = "System.String"


class _Compiler:
    """Turns fhirpathpy's parse tree into closures, knowing the static type of each collection."""

    def __init__(self) -> None:
        self.model = _model()
        self.context_type: str | None = None
        self.depth = 0  # how many iteration arguments (where, select, ...) enclose the node

    # expressions: (this, env) -> list ------------------------------------------------------

    def expr(self, node: dict, tt: str | None) -> tuple[Expr, str | None]:
        """Compile an expression; an expensive part whose value cannot change during one
        evaluation (it does not read ``$this``, or ``$this`` is the context) is computed once."""
        fn, out_type = self._expr(node, tt)
        if (
            node.get("type") in _MEMO_KINDS
            and _expensive(node)
            and (self.depth == 0 or not _depends_on_this(node))
        ):
            key = (orjson.dumps(node, option=orjson.OPT_SORT_KEYS), tt)
            inner = fn

            def memoised(this: list, env: _Env) -> list:
                memo = env.memo
                if memo is None:
                    memo = env.memo = {}
                found = memo.get(key)
                if found is None:
                    found = memo[key] = inner(this, env)
                return found

            fn = memoised
        return fn, out_type

    def _expr(self, node: dict, tt: str | None) -> tuple[Expr, str | None]:
        kind = node.get("type")
        children = node.get("children", [])
        if kind == "_CountChildren":
            return self.count_children(children, tt)
        if kind == "_Not":
            inner, _ = self.expr(children[0], tt)

            def negated(this: list, env: _Env) -> list:
                return _FALSE if inner(this, env) is _TRUE else _TRUE

            return negated, _BOOL
        if kind == "TermExpression":
            return self.term(children[0], tt)
        if kind == "InvocationExpression":
            left, lt = self.expr(children[0], tt)
            inv, ot = self.invocation(children[1], lt, tt, at_root=False)

            def invocation_expression(this: list, env: _Env) -> list:
                return inv(left(this, env), this, env)

            return invocation_expression, ot
        if kind in ("AndExpression", "OrExpression", "ImpliesExpression"):
            return self.logic(node["terminalNodeText"][0], children, tt)
        if kind == "EqualityExpression":
            return self.equality(node["terminalNodeText"][0], children, tt)
        if kind == "InequalityExpression":
            return self.inequality(node["terminalNodeText"][0], children, tt)
        if kind == "MembershipExpression":
            return self.membership(node["terminalNodeText"][0], children, tt)
        if kind == "UnionExpression":
            left, lt = self.expr(children[0], tt)
            right, rt = self.expr(children[1], tt)
            return self.union(left, lt, right, rt)
        if kind == "TypeExpression":
            left, lt = self.expr(children[0], tt)
            target = self.model.resolve_type_name(children[1]["text"])
            op = node["terminalNodeText"][0]
            inv, ot = self.type_op(op, target, lt)

            def type_expression(this: list, env: _Env) -> list:
                return inv(left(this, env), this, env)

            return type_expression, ot
        if kind in ("AdditiveExpression", "MultiplicativeExpression"):
            return self.arithmetic(node["terminalNodeText"][0], children, tt)
        if kind == "PolarityExpression":
            return self.polarity(node["terminalNodeText"][0], children[0], tt)
        if kind == "IndexerExpression":
            return self.indexer(children, tt)
        raise _Unsupported(f"expression {kind}")

    def count_children(self, children: list, tt: str | None) -> tuple[Expr, str | None]:
        if not children:
            return (lambda this, env: [_count_children(this)]), _INT
        inner, _ = self.expr(children[0], tt)

        def count_children(this: list, env: _Env) -> list:
            return [_count_children(inner(this, env))]

        return count_children, _INT

    def term(self, node: dict, tt: str | None) -> tuple[Expr, str | None]:
        kind = node.get("type")
        children = node.get("children", [])
        if kind == "InvocationTerm":
            inv, ot = self.invocation(children[0], tt, tt, at_root=True)
            if children[0].get("type") == "MemberInvocation":
                return inv, ot  # a navigator: (this, env) works as (input, ...)

            def invocation_term(this: list, env: _Env) -> list:
                return inv(this, this, env)

            return invocation_term, ot
        if kind == "ParenthesizedTerm":
            return self.expr(children[0], tt)
        if kind == "LiteralTerm":
            return self.literal(children[0])
        if kind == "ExternalConstantTerm":
            return self.external(children[0], tt)
        raise _Unsupported(f"term {kind}")

    def literal(self, node: dict) -> tuple[Expr, str | None]:
        kind = node.get("type")
        text = node["terminalNodeText"][0] if node.get("terminalNodeText") else node.get("text", "")
        value: Any
        if kind == "NullLiteral":
            return (lambda this, env: _EMPTY), None
        if kind == "BooleanLiteral":
            result = _TRUE if text == "true" else _FALSE
            return (lambda this, env: result), _BOOL
        if kind == "StringLiteral":
            value = _string_literal(text)
            static = _STR
        elif kind == "NumberLiteral":
            if "." in text:
                value, static = Decimal(text), "System.Decimal"
            else:
                value, static = int(text), _INT
        elif kind == "DateTimeLiteral":
            body = text[1:]
            if body.endswith("T"):
                body = body[:-1]
            if _date_parts(body) is None:
                raise _Unsupported(f"date literal {text}")
            static = "System.DateTime" if "T" in body else "System.Date"
            value = Node(body, None, static)
        elif kind == "TimeLiteral":
            body = text[2:]
            if _time_parts(body) is None:
                raise _Unsupported(f"time literal {text}")
            static = "System.Time"
            value = Node(body, None, static)
        else:
            raise _Unsupported(f"literal {kind}")
        constant = [value]

        def literal(this: list, env: _Env) -> list:
            return constant

        return literal, static

    def external(self, node: dict, tt: str | None) -> tuple[Expr, str | None]:
        children = node.get("children", [])
        name = _identifier(children[0]) if children else _string_literal(node["terminalNodeText"][1])
        if name == "resource":

            def resource(this: list, env: _Env) -> list:
                found = env.hooks.resource
                return [found] if found is not None else _EMPTY

            return resource, None
        if name == "rootResource":

            def root_resource(this: list, env: _Env) -> list:
                hooks = env.hooks
                found = hooks.root_resource if hooks.root_resource is not None else hooks.resource
                return [found] if found is not None else _EMPTY

            return root_resource, None
        if name == "context":
            return (lambda this, env: env.context), self.context_type
        if name in _CONSTANTS:
            constant = [_CONSTANTS[name]]
            return (lambda this, env: constant), _STR
        raise _Unsupported(f"%{name}")

    # invocations: (input, this, env) -> list -----------------------------------------------

    def invocation(
        self, node: dict, it: str | None, tt: str | None, at_root: bool
    ) -> tuple[Invocation, str | None]:
        kind = node.get("type")
        children = node.get("children", [])
        if kind == "MemberInvocation":
            return self.member(_identifier(children[0]), it)
        if kind == "FunctionInvocation":
            functn = children[0]
            name = _identifier(functn["children"][0])
            params = functn["children"][1]["children"] if len(functn["children"]) > 1 else []
            return self.function(name, params, it, tt)
        if kind == "ThisInvocation" and at_root:
            return (lambda input, this, env: this), tt
        if kind == "IndexInvocation" and at_root:
            return (lambda input, this, env: [env.index]), _INT
        raise _Unsupported(f"invocation {kind}")

    def member(self, name: str, it: str | None) -> tuple[Invocation, str | None]:
        model = self.model
        if name[0].isupper() and (name in model.types or name in ("BackboneElement", "DomainResource")):
            if it is not None and model.is_a(it, name):
                return (lambda input, *_: input), it

            def type_filter(input: list, *_: Any) -> list:
                return [item for item in input if model.is_a(_type_of(item, it), name)]

            return type_filter, it
        if it is None:
            return _dynamic_navigator(name), None
        member = model.member(it, name)
        out_type = member.type if member.kind in ("complex", "primitive") else None
        return _static_navigator(member), out_type

    def logic(self, op: str, children: list, tt: str | None) -> tuple[Expr, str | None]:
        left, _ = self.expr(children[0], tt)
        right, _ = self.expr(children[1], tt)
        if op == "and":

            def and_(this: list, env: _Env) -> list:
                a = _b3(left(this, env))
                if a is False:
                    return _FALSE
                b = _b3(right(this, env))
                if b is False:
                    return _FALSE
                return _TRUE if a is True and b is True else _EMPTY

            return and_, _BOOL
        if op == "or":

            def or_(this: list, env: _Env) -> list:
                a = _b3(left(this, env))
                if a is True:
                    return _TRUE
                b = _b3(right(this, env))
                if b is True:
                    return _TRUE
                return _FALSE if a is False and b is False else _EMPTY

            return or_, _BOOL
        if op == "xor":

            def xor(this: list, env: _Env) -> list:
                a = _b3(left(this, env))
                if a is None:
                    return _EMPTY
                b = _b3(right(this, env))
                if b is None:
                    return _EMPTY
                return _TRUE if a is not b else _FALSE

            return xor, _BOOL
        if op == "implies":

            def implies(this: list, env: _Env) -> list:
                a = _b3(left(this, env))
                if a is False:
                    return _TRUE
                b = _b3(right(this, env))
                if b is True:
                    return _TRUE
                if a is True and b is False:
                    return _FALSE
                return _EMPTY

            return implies, _BOOL
        raise _Unsupported(op)

    def equality(self, op: str, children: list, tt: str | None) -> tuple[Expr, str | None]:
        left, lt = self.expr(children[0], tt)
        right, rt = self.expr(children[1], tt)
        if op in ("=", "!="):
            negate = op == "!="
            constant = _literal_value(children[1])
            if constant is not None and lt not in _DATE_TYPES and lt not in _TIME_TYPES:
                return self.equal_constant(left, lt, constant, rt, negate), _BOOL

            def equal(this: list, env: _Env) -> list:
                a = left(this, env)
                if not a:
                    return _EMPTY
                b = right(this, env)
                if not b:
                    return _EMPTY
                result = _equal(a, lt, b, rt)
                if result is None:
                    return _EMPTY
                return _TRUE if result is not negate else _FALSE

            return equal, _BOOL
        if op in ("~", "!~"):
            negate = op == "!~"

            def equivalent(this: list, env: _Env) -> list:
                result = _equivalent(left(this, env), lt, right(this, env), rt)
                return _TRUE if result is not negate else _FALSE

            return equivalent, _BOOL
        raise _Unsupported(op)

    def equal_constant(self, left: Expr, lt: str | None, constant: Any, ct: str | None, negate: bool) -> Expr:
        """``x = 'literal'``: the common shape, without building the right-hand collection."""
        kind = type(constant)
        yes, no = (_FALSE, _TRUE) if negate else (_TRUE, _FALSE)
        right = [constant]

        def equal_constant(this: list, env: _Env) -> list:
            a = left(this, env)
            if not a:
                return _EMPTY
            if len(a) != 1:
                return no
            x = a[0]
            if type(x) is Node:
                if x.type in _DATE_TYPES or x.type in _TIME_TYPES:
                    result = _equal(a, lt, right, ct)
                    return _EMPTY if result is None else (yes if result else no)
                x = x.value
                if x is None:
                    return _EMPTY
            if type(x) is kind:
                return yes if x == constant else no
            result = _item_equal(x, lt, constant, ct)
            return _EMPTY if result is None else (yes if result else no)

        return equal_constant

    def inequality(self, op: str, children: list, tt: str | None) -> tuple[Expr, str | None]:
        left, lt = self.expr(children[0], tt)
        right, rt = self.expr(children[1], tt)
        test: Callable[[int], bool] = {
            "<": lambda c: c < 0,
            "<=": lambda c: c <= 0,
            ">": lambda c: c > 0,
            ">=": lambda c: c >= 0,
        }[op]

        def inequality(this: list, env: _Env) -> list:
            a = left(this, env)
            if not a:
                return _EMPTY
            b = right(this, env)
            if not b:
                return _EMPTY
            result = _compare(a, lt, b, rt)
            if result is None:
                return _EMPTY
            return _TRUE if test(result) else _FALSE

        return inequality, _BOOL

    def membership(self, op: str, children: list, tt: str | None) -> tuple[Expr, str | None]:
        left, lt = self.expr(children[0], tt)
        right, rt = self.expr(children[1], tt)
        if op == "contains":
            left, lt, right, rt = right, rt, left, lt

        def membership(this: list, env: _Env) -> list:
            item = _single(left(this, env), op)
            if item is None:
                return _EMPTY
            collection = right(this, env)
            for other in collection:
                if _item_equal(item, lt, other, rt) is True:
                    return _TRUE
            return _FALSE

        return membership, _BOOL

    def union(self, left: Expr, lt: str | None, right: Expr, rt: str | None) -> tuple[Expr, str | None]:
        if lt == rt:

            def union_same(this: list, env: _Env) -> list:
                return _distinct(left(this, env) + right(this, env))

            return union_same, lt

        def union_mixed(this: list, env: _Env) -> list:
            return _distinct(_wrap(left(this, env), lt) + _wrap(right(this, env), rt))

        return union_mixed, None

    def arithmetic(self, op: str, children: list, tt: str | None) -> tuple[Expr, str | None]:
        left, lt = self.expr(children[0], tt)
        right, rt = self.expr(children[1], tt)
        if op == "&":

            def concatenate(this: list, env: _Env) -> list:
                a = _string_input(left(this, env), "&")
                b = _string_input(right(this, env), "&")
                return [(a or "") + (b or "")]

            return concatenate, _STR
        if op not in ("+", "-", "*", "/", "div", "mod"):
            raise _Unsupported(op)

        def arithmetic(this: list, env: _Env) -> list:
            a = _single(left(this, env), op)
            if a is None:
                return _EMPTY
            b = _single(right(this, env), op)
            if b is None:
                return _EMPTY
            a, b = _value(a), _value(b)
            if a is None or b is None:
                return _EMPTY
            if type(a) is str and type(b) is str and op == "+":
                return [a + b]
            if not (_is_number(a) and _is_number(b)) or type(a) is bool or type(b) is bool:
                raise FhirPathEvaluationError(f"cannot apply {op} to {a!r} and {b!r}")
            a, b = _num(a), _num(b)
            if op == "+":
                return [a + b]
            if op == "-":
                return [a - b]
            if op == "*":
                return [a * b]
            if b == 0:
                return _EMPTY
            if op == "/":
                return [Decimal(a) / Decimal(b)]
            if op == "div":
                return [int(Decimal(a) / Decimal(b))]
            return [a - b * int(Decimal(a) / Decimal(b))]

        out_type = lt if lt == rt and lt in (_INT, "System.Decimal", _STR) else None
        return arithmetic, out_type

    def polarity(self, sign: str, child: dict, tt: str | None) -> tuple[Expr, str | None]:
        inner, it = self.expr(child, tt)

        def polarity(this: list, env: _Env) -> list:
            value = _value(_single(inner(this, env), sign))
            if value is None:
                return _EMPTY
            if not _is_number(value) or type(value) is bool:
                raise FhirPathEvaluationError(f"unary {sign} needs a number")
            return [-_num(value)] if sign == "-" else [value]

        return polarity, it

    def indexer(self, children: list, tt: str | None) -> tuple[Expr, str | None]:
        collection, ct = self.expr(children[0], tt)
        index, _ = self.expr(children[1], tt)

        def indexer(this: list, env: _Env) -> list:
            position = _value(_single(index(this, env), "[]"))
            if position is None:
                return _EMPTY
            items = collection(this, env)
            if type(position) is not int or type(position) is bool:
                raise FhirPathEvaluationError("an index must be an integer")
            return [items[position]] if 0 <= position < len(items) else _EMPTY

        return indexer, ct

    def type_op(self, op: str, target: str, it: str | None) -> tuple[Invocation, str | None]:
        model = self.model
        verdicts: dict[str | None, bool] = {}  # item type -> is it a target

        def matches(item: Any) -> bool:
            type_ = item.type if type(item) is Node else _type_of(item, it)
            verdict = verdicts.get(type_)
            if verdict is None:
                verdict = verdicts[type_] = model.is_a(type_, target)
            return verdict

        if op == "is":

            def is_(input: list, this: list, env: _Env) -> list:
                item = _single(input, "is")
                if item is None:
                    return _EMPTY
                return _TRUE if matches(item) else _FALSE

            return is_, _BOOL
        if op == "as":
            leaf = target not in model.subtyped and not model.is_primitive(target)
            if leaf:

                def as_leaf(input: list, this: list, env: _Env) -> list:
                    out = []
                    for item in input:
                        verdict = verdicts.get(item.type) if type(item) is Node else None
                        if verdict is None:
                            verdict = matches(item)
                        if verdict:
                            out.append(item.value if type(item) is Node and item.ext is None else item)
                    return out

                return as_leaf, target

            def as_(input: list, this: list, env: _Env) -> list:
                out = []
                for item in input:
                    verdict = verdicts.get(item.type) if type(item) is Node else None
                    if verdict is None:
                        verdict = matches(item)
                    if verdict:
                        out.append(item)
                return out

            return as_, (it if it is not None and model.is_a(it, target) else None)
        raise _Unsupported(op)

    # functions -----------------------------------------------------------------------------

    def lambda_param(self, param: dict, it: str | None) -> tuple[Expr, str | None, bool]:
        fn, ot = self.iteration_arg(param, it)
        return fn, ot, _contains_type(param, "IndexInvocation")

    def iteration_arg(self, param: dict, it: str | None) -> tuple[Expr, str | None]:
        """Compile an argument evaluated on each item (or on the input) rather than on ``$this``."""
        self.depth += 1
        try:
            return self.expr(param, it)
        finally:
            self.depth -= 1

    def function(
        self, name: str, params: list, it: str | None, tt: str | None
    ) -> tuple[Invocation, str | None]:
        handler = getattr(self, "fn_" + name, None)
        if handler is None:
            raise _Unsupported(f"function {name}()")
        return handler(params, it, tt)

    @staticmethod
    def _arity(name: str, params: list, *allowed: int) -> None:
        if len(params) not in allowed:
            raise _Unsupported(f"{name}() with {len(params)} arguments")

    def fn_empty(self, params: list, it: str | None, tt: str | None) -> tuple[Invocation, str | None]:
        self._arity("empty", params, 0)
        return (lambda input, this, env: _FALSE if input else _TRUE), _BOOL

    def fn_exists(self, params: list, it: str | None, tt: str | None) -> tuple[Invocation, str | None]:
        self._arity("exists", params, 0, 1)
        if not params:
            return (lambda input, this, env: _TRUE if input else _FALSE), _BOOL
        criteria, _, uses_index = self.lambda_param(params[0], it)

        def exists(input: list, this: list, env: _Env) -> list:
            saved = env.index
            for i, item in enumerate(input):
                if uses_index:
                    env.index = i
                result = criteria([item], env)
                if result and _b3(result) is True:
                    env.index = saved
                    return _TRUE
            env.index = saved
            return _FALSE

        return exists, _BOOL

    def fn_all(self, params: list, it: str | None, tt: str | None) -> tuple[Invocation, str | None]:
        self._arity("all", params, 1)
        criteria, _, uses_index = self.lambda_param(params[0], it)

        def all_(input: list, this: list, env: _Env) -> list:
            saved = env.index
            for i, item in enumerate(input):
                if uses_index:
                    env.index = i
                if _b3(criteria([item], env)) is not True:
                    env.index = saved
                    return _FALSE
            env.index = saved
            return _TRUE

        return all_, _BOOL

    def fn_where(self, params: list, it: str | None, tt: str | None) -> tuple[Invocation, str | None]:
        self._arity("where", params, 1)
        criteria, _, uses_index = self.lambda_param(params[0], it)

        def where(input: list, this: list, env: _Env) -> list:
            out = []
            saved = env.index
            for i, item in enumerate(input):
                if uses_index:
                    env.index = i
                result = criteria([item], env)
                if result and _b3(result) is True:
                    out.append(item)
            env.index = saved
            return out

        return where, it

    def fn_select(self, params: list, it: str | None, tt: str | None) -> tuple[Invocation, str | None]:
        self._arity("select", params, 1)
        projection, ot, uses_index = self.lambda_param(params[0], it)

        def select(input: list, this: list, env: _Env) -> list:
            out: list = []
            saved = env.index
            for i, item in enumerate(input):
                if uses_index:
                    env.index = i
                out.extend(projection([item], env))
            env.index = saved
            return out

        return select, ot

    def fn_iif(self, params: list, it: str | None, tt: str | None) -> tuple[Invocation, str | None]:
        self._arity("iif", params, 2, 3)
        criterion, _ = self.iteration_arg(params[0], it)
        then, then_type = self.iteration_arg(params[1], it)
        if len(params) == 3:
            otherwise, else_type = self.iteration_arg(params[2], it)
        else:
            otherwise, else_type = (lambda this, env: _EMPTY), then_type
        if then_type == else_type:
            out_type = then_type

            def iif(input: list, this: list, env: _Env) -> list:
                if _b3(criterion(input, env)) is True:
                    return then(input, env)
                return otherwise(input, env)

            return iif, out_type

        def iif_mixed(input: list, this: list, env: _Env) -> list:
            if _b3(criterion(input, env)) is True:
                return _wrap(then(input, env), then_type)
            return _wrap(otherwise(input, env), else_type)

        return iif_mixed, None

    def fn_not(self, params: list, it: str | None, tt: str | None) -> tuple[Invocation, str | None]:
        self._arity("not", params, 0)

        def not_(input: list, this: list, env: _Env) -> list:
            value = _b3(input)
            if value is None:
                return _EMPTY
            return _FALSE if value else _TRUE

        return not_, _BOOL

    def fn_count(self, params: list, it: str | None, tt: str | None) -> tuple[Invocation, str | None]:
        self._arity("count", params, 0)
        return (lambda input, this, env: [len(input)]), _INT

    def _simple(
        self, name: str, params: list, fn: Callable[[list], list], out_type: str | None
    ) -> tuple[Invocation, str | None]:
        self._arity(name, params, 0)
        return (lambda input, this, env: fn(input)), out_type

    def fn_first(self, params: list, it: str | None, tt: str | None) -> tuple[Invocation, str | None]:
        return self._simple("first", params, lambda items: items[:1], it)

    def fn_last(self, params: list, it: str | None, tt: str | None) -> tuple[Invocation, str | None]:
        return self._simple("last", params, lambda items: items[-1:], it)

    def fn_tail(self, params: list, it: str | None, tt: str | None) -> tuple[Invocation, str | None]:
        return self._simple("tail", params, lambda items: items[1:], it)

    def fn_single(self, params: list, it: str | None, tt: str | None) -> tuple[Invocation, str | None]:
        def single(items: list) -> list:
            if len(items) > 1:
                raise FhirPathEvaluationError(f"single() on {len(items)} items")
            return items

        return self._simple("single", params, single, it)

    def fn_distinct(self, params: list, it: str | None, tt: str | None) -> tuple[Invocation, str | None]:
        return self._simple("distinct", params, _distinct, it)

    def fn_isDistinct(self, params: list, it: str | None, tt: str | None) -> tuple[Invocation, str | None]:
        return self._simple(
            "isDistinct",
            params,
            lambda items: _TRUE if len(_distinct(items)) == len(items) else _FALSE,
            _BOOL,
        )

    def fn_allTrue(self, params: list, it: str | None, tt: str | None) -> tuple[Invocation, str | None]:
        return self._simple(
            "allTrue", params, lambda items: _TRUE if all(_strict_bool(x) for x in items) else _FALSE, _BOOL
        )

    def fn_anyTrue(self, params: list, it: str | None, tt: str | None) -> tuple[Invocation, str | None]:
        return self._simple(
            "anyTrue", params, lambda items: _TRUE if any(_strict_bool(x) for x in items) else _FALSE, _BOOL
        )

    def fn_allFalse(self, params: list, it: str | None, tt: str | None) -> tuple[Invocation, str | None]:
        return self._simple(
            "allFalse",
            params,
            lambda items: _TRUE if not any(_strict_bool(x) for x in items) else _FALSE,
            _BOOL,
        )

    def fn_anyFalse(self, params: list, it: str | None, tt: str | None) -> tuple[Invocation, str | None]:
        return self._simple(
            "anyFalse",
            params,
            lambda items: _TRUE if not all(_strict_bool(x) for x in items) else _FALSE,
            _BOOL,
        )

    def fn_hasValue(self, params: list, it: str | None, tt: str | None) -> tuple[Invocation, str | None]:
        def has_value(items: list) -> list:
            if len(items) != 1:
                return _FALSE
            value = _value(items[0])
            return _FALSE if value is None or type(value) is dict or type(value) is list else _TRUE

        return self._simple("hasValue", params, has_value, _BOOL)

    def fn_htmlChecks(self, params: list, it: str | None, tt: str | None) -> tuple[Invocation, str | None]:
        return self._simple("htmlChecks", params, lambda items: _TRUE, _BOOL)

    def fn_children(self, params: list, it: str | None, tt: str | None) -> tuple[Invocation, str | None]:
        def children(items: list) -> list:
            out: list = []
            for item in items:
                _children_of(item, it, out)
            return out

        return self._simple("children", params, children, None)

    def fn_descendants(self, params: list, it: str | None, tt: str | None) -> tuple[Invocation, str | None]:
        def descendants(items: list) -> list:
            out: list = []
            level: list = []
            for item in items:
                _children_of(item, it, level)
            while level:
                out.extend(level)
                following: list = []
                for item in level:
                    _children_of(item, None, following)
                level = following
            return out

        return self._simple("descendants", params, descendants, None)

    def fn_toString(self, params: list, it: str | None, tt: str | None) -> tuple[Invocation, str | None]:
        def to_string(items: list) -> list:
            item = _single(items, "toString()")
            if item is None:
                return _EMPTY
            text = _to_string(_value(item))
            return _EMPTY if text is None else [text]

        return self._simple("toString", params, to_string, _STR)

    def fn_toInteger(self, params: list, it: str | None, tt: str | None) -> tuple[Invocation, str | None]:
        def to_integer(items: list) -> list:
            item = _single(items, "toInteger()")
            if item is None:
                return _EMPTY
            value = _value(item)
            if type(value) is bool:
                return [1 if value else 0]
            if type(value) is int:
                return [value]
            if type(value) is str and re.fullmatch(r"[+-]?\d+", value):
                return [int(value)]
            return _EMPTY

        return self._simple("toInteger", params, to_integer, _INT)

    def fn_length(self, params: list, it: str | None, tt: str | None) -> tuple[Invocation, str | None]:
        def length(items: list) -> list:
            text = _string_input(items, "length")
            return _EMPTY if text is None else [len(text)]

        return self._simple("length", params, length, _INT)

    def _string_fn(
        self, name: str, params: list, fn: Callable[[str], Any], out_type: str
    ) -> tuple[Invocation, str | None]:
        def string_fn(items: list) -> list:
            text = _string_input(items, name)
            return _EMPTY if text is None else [fn(text)]

        return self._simple(name, params, string_fn, out_type)

    def fn_lower(self, params: list, it: str | None, tt: str | None) -> tuple[Invocation, str | None]:
        return self._string_fn("lower", params, str.lower, _STR)

    def fn_upper(self, params: list, it: str | None, tt: str | None) -> tuple[Invocation, str | None]:
        return self._string_fn("upper", params, str.upper, _STR)

    def fn_trim(self, params: list, it: str | None, tt: str | None) -> tuple[Invocation, str | None]:
        return self._string_fn("trim", params, str.strip, _STR)

    def _string_arg_fn(
        self, name: str, params: list, tt: str | None, count: int, fn: Callable[..., Any], out_type: str
    ) -> tuple[Invocation, str | None]:
        """A function of a string input and ``count`` arguments evaluated against ``$this``."""
        self._arity(name, params, count)
        args = [self.expr(p, tt)[0] for p in params]

        def string_arg_fn(input: list, this: list, env: _Env) -> list:
            text = _string_input(input, name)
            if text is None:
                return _EMPTY
            values = []
            for arg in args:
                value = _value(_single(arg(this, env), name + "() argument"))
                if value is None:
                    return _EMPTY
                values.append(value)
            result = fn(text, *values)
            return _EMPTY if result is None else [result]

        return string_arg_fn, out_type

    def fn_startsWith(self, params: list, it: str | None, tt: str | None) -> tuple[Invocation, str | None]:
        return self._string_arg_fn(
            "startsWith", params, tt, 1, lambda s, p: s.startswith(_need_str(p)), _BOOL
        )

    def fn_endsWith(self, params: list, it: str | None, tt: str | None) -> tuple[Invocation, str | None]:
        return self._string_arg_fn("endsWith", params, tt, 1, lambda s, p: s.endswith(_need_str(p)), _BOOL)

    def fn_contains(self, params: list, it: str | None, tt: str | None) -> tuple[Invocation, str | None]:
        return self._string_arg_fn("contains", params, tt, 1, lambda s, p: _need_str(p) in s, _BOOL)

    def fn_indexOf(self, params: list, it: str | None, tt: str | None) -> tuple[Invocation, str | None]:
        return self._string_arg_fn("indexOf", params, tt, 1, lambda s, p: s.find(_need_str(p)), _INT)

    def fn_matches(self, params: list, it: str | None, tt: str | None) -> tuple[Invocation, str | None]:
        return self._string_arg_fn(
            "matches", params, tt, 1, lambda s, p: _regex(_need_str(p)).search(s) is not None, _BOOL
        )

    def fn_replaceMatches(
        self, params: list, it: str | None, tt: str | None
    ) -> tuple[Invocation, str | None]:
        def replace_matches(text: str, pattern: Any, substitution: Any) -> str:
            replacement = re.sub(r"\$(\d+)", r"\\\1", _need_str(substitution))
            return _regex(_need_str(pattern)).sub(replacement, text)

        return self._string_arg_fn("replaceMatches", params, tt, 2, replace_matches, _STR)

    def fn_substring(self, params: list, it: str | None, tt: str | None) -> tuple[Invocation, str | None]:
        self._arity("substring", params, 1, 2)
        args = [self.expr(p, tt)[0] for p in params]

        def substring(input: list, this: list, env: _Env) -> list:
            text = _string_input(input, "substring")
            if text is None:
                return _EMPTY
            start = _value(_single(args[0](this, env), "substring() start"))
            if start is None:
                return _EMPTY
            if type(start) is not int or start < 0 or start >= len(text):
                return _EMPTY
            if len(args) == 1:
                return [text[start:]]
            length = _value(_single(args[1](this, env), "substring() length"))
            if length is None:
                return [text[start:]]
            if type(length) is not int:
                raise FhirPathEvaluationError("substring() length must be an integer")
            return [text[start : start + max(length, 0)]]

        return substring, _STR

    def _collection_arg_fn(
        self, name: str, params: list, tt: str | None, fn: Callable[[list, list], list], it: str | None
    ) -> tuple[Invocation, str | None]:
        self._arity(name, params, 1)
        other, ot = self.expr(params[0], tt)
        if ot == it:
            return (lambda input, this, env: fn(input, other(this, env))), it
        return (lambda input, this, env: fn(_wrap(input, it), _wrap(other(this, env), ot))), None

    def fn_union(self, params: list, it: str | None, tt: str | None) -> tuple[Invocation, str | None]:
        return self._collection_arg_fn("union", params, tt, lambda a, b: _distinct(a + b), it)

    def fn_combine(self, params: list, it: str | None, tt: str | None) -> tuple[Invocation, str | None]:
        return self._collection_arg_fn("combine", params, tt, lambda a, b: a + b, it)

    def fn_intersect(self, params: list, it: str | None, tt: str | None) -> tuple[Invocation, str | None]:
        def intersect(a: list, b: list) -> list:
            keys = {_key(x) for x in b}
            return _distinct([x for x in a if _key(x) in keys])

        return self._collection_arg_fn("intersect", params, tt, intersect, it)

    def fn_exclude(self, params: list, it: str | None, tt: str | None) -> tuple[Invocation, str | None]:
        def exclude(a: list, b: list) -> list:
            keys = {_key(x) for x in b}
            return [x for x in a if _key(x) not in keys]

        return self._collection_arg_fn("exclude", params, tt, exclude, it)

    def _integer_arg_fn(
        self, name: str, params: list, tt: str | None, fn: Callable[[list, int], list], it: str | None
    ) -> tuple[Invocation, str | None]:
        self._arity(name, params, 1)
        arg, _ = self.expr(params[0], tt)

        def integer_arg_fn(input: list, this: list, env: _Env) -> list:
            n = _value(_single(arg(this, env), name + "()"))
            if n is None:
                return _EMPTY
            if type(n) is not int:
                raise FhirPathEvaluationError(f"{name}() needs an integer")
            return fn(input, n)

        return integer_arg_fn, it

    def fn_skip(self, params: list, it: str | None, tt: str | None) -> tuple[Invocation, str | None]:
        return self._integer_arg_fn("skip", params, tt, lambda items, n: items[max(n, 0) :], it)

    def fn_take(self, params: list, it: str | None, tt: str | None) -> tuple[Invocation, str | None]:
        return self._integer_arg_fn("take", params, tt, lambda items, n: items[: max(n, 0)], it)

    def fn_trace(self, params: list, it: str | None, tt: str | None) -> tuple[Invocation, str | None]:
        self._arity("trace", params, 1, 2)
        return (lambda input, this, env: input), it

    def _type_arg(self, name: str, params: list) -> str:
        self._arity(name, params, 1)
        return self.model.resolve_type_name(_type_name_text(params[0]))

    def fn_ofType(self, params: list, it: str | None, tt: str | None) -> tuple[Invocation, str | None]:
        return self.type_op("as", self._type_arg("ofType", params), it)

    def fn_as(self, params: list, it: str | None, tt: str | None) -> tuple[Invocation, str | None]:
        return self.type_op("as", self._type_arg("as", params), it)

    def fn_is(self, params: list, it: str | None, tt: str | None) -> tuple[Invocation, str | None]:
        return self.type_op("is", self._type_arg("is", params), it)

    def fn_extension(self, params: list, it: str | None, tt: str | None) -> tuple[Invocation, str | None]:
        self._arity("extension", params, 1)
        arg, _ = self.expr(params[0], tt)

        def extension(input: list, this: list, env: _Env) -> list:
            url = _value(_single(arg(this, env), "extension()"))
            if url is None:
                return _EMPTY
            out = []
            for item in input:
                data = _data(item)
                if type(data) is dict:
                    for ext in data.get("extension") or ():
                        if type(ext) is dict and ext.get("url") == url:
                            out.append(ext)
            return out

        return extension, "Extension"

    def fn_resolve(self, params: list, it: str | None, tt: str | None) -> tuple[Invocation, str | None]:
        self._arity("resolve", params, 0)

        def resolve(input: list, this: list, env: _Env) -> list:
            out = []
            hooks = env.hooks
            for item in input:
                value = _value(item)
                if type(value) is dict:
                    reference = value.get("reference")
                elif type(value) is str:
                    reference = value
                else:
                    continue
                if type(reference) is not str:
                    continue
                if reference.startswith("#"):
                    container = _container(hooks.resource, hooks.root_resource)
                    if type(container) is dict:
                        if reference == "#":
                            out.append(container)
                            continue
                        target = reference[1:]
                        found = None
                        for contained in container.get("contained") or ():
                            if type(contained) is dict and contained.get("id") == target:
                                found = contained
                                break
                        if found is not None:
                            out.append(found)
                            continue
                resolved = hooks.resolve(reference)
                if resolved is not None:
                    out.append(resolved)
            return out

        return resolve, None

    def fn_memberOf(self, params: list, it: str | None, tt: str | None) -> tuple[Invocation, str | None]:
        self._arity("memberOf", params, 1)
        arg, _ = self.expr(params[0], tt)

        def member_of(input: list, this: list, env: _Env) -> list:
            valueset = _value(_single(arg(this, env), "memberOf()"))
            if valueset is None:
                return _EMPTY
            out = []
            for item in input:
                value = _value(item)
                if value is None:
                    continue
                verdict = env.hooks.member_of(value, valueset)
                if verdict is not None:
                    out.append(bool(verdict))
            return out

        return member_of, _BOOL

    # whole expressions ---------------------------------------------------------------------

    def compile(self, tree: dict, context_type: str | None) -> Expr:
        self.context_type = context_type
        fn, _ = self.expr(_optimise(tree["children"][0]), context_type)
        return fn


_MEMO_KINDS = frozenset({"InvocationExpression", "UnionExpression", "TermExpression"})
_EXPENSIVE_FUNCTIONS = frozenset({"resolve", "descendants", "children", "memberOf"})
# functions whose arguments are evaluated on the input items (or not at all), never on $this
_ITERATING_FUNCTIONS = frozenset({"where", "select", "all", "exists", "iif", "trace", "ofType", "as", "is"})


def _expensive(node: dict) -> bool:
    if node.get("type") == "FunctionInvocation" and _function_name(node) in _EXPENSIVE_FUNCTIONS:
        return True
    return any(_expensive(child) for child in node.get("children", ()))


def _depends_on_this(node: dict) -> bool:
    """Whether an expression's value depends on the ``$this`` it is evaluated against."""
    kind = node.get("type")
    children = node.get("children", [])
    if kind == "TermExpression":
        term = children[0]
        if term.get("type") in ("LiteralTerm", "ExternalConstantTerm"):
            return False
        if term.get("type") == "ParenthesizedTerm":
            return _depends_on_this(term["children"][0])
        return True
    if kind == "InvocationExpression":
        left, invocation = children
        if _depends_on_this(left):
            return True
        if invocation.get("type") == "FunctionInvocation":
            if _function_name(invocation) in _ITERATING_FUNCTIONS:
                return False
            return any(_depends_on_this(p) for p in _params(invocation))
        return invocation.get("type") != "MemberInvocation"
    if kind == "TypeExpression":
        return _depends_on_this(children[0])
    if kind == "_CountChildren":
        return not children or _depends_on_this(children[0])
    if kind in (
        "_Not",
        "PolarityExpression",
        "IndexerExpression",
        "AdditiveExpression",
        "MultiplicativeExpression",
        "UnionExpression",
        "InequalityExpression",
        "EqualityExpression",
        "MembershipExpression",
        "AndExpression",
        "OrExpression",
        "ImpliesExpression",
    ):
        return any(_depends_on_this(child) for child in children)
    return True


def _container(resource: Any, root: Any) -> Any:
    """The resource whose ``contained`` a local reference (``#id``) points into: the root when
    ``resource`` is one of its contained resources, else ``resource`` itself (for a resource in a
    Bundle, whichever of the two conventions the caller follows for %rootResource)."""
    if resource is None:
        return root
    if type(root) is dict and root is not resource:
        for contained in root.get("contained") or ():
            if contained is resource:
                return root
    return resource


def _need_str(value: Any) -> str:
    if type(value) is not str:
        raise FhirPathEvaluationError(f"expected a string argument, got {value!r}")
    return value


def _optimise(node: dict) -> dict:
    """Rewrite hot shapes: ``children().count()`` and ``X.where(c).exists()`` -> ``X.exists(c)``."""
    children = [_optimise(child) for child in node.get("children", [])]
    node = {**node, "children": children}
    if node.get("type") == "InvocationExpression" and len(children) == 2:
        left, right = children
        name = _function_name(right)
        if name == "count" and not _params(right):
            inner = _call_on(left)
            if inner is not None and _function_name(inner[1]) == "children" and not _params(inner[1]):
                return {"type": "_CountChildren", "children": [inner[0]] if inner[0] else []}
        if name in ("exists", "empty") and not _params(right):
            inner = _call_on(left)
            if inner is not None and _function_name(inner[1]) == "where":
                exists = {
                    "type": "FunctionInvocation",
                    "children": [
                        {
                            "type": "Functn",
                            "children": [
                                {"type": "Identifier", "terminalNodeText": ["exists"], "text": "exists"},
                                {"type": "ParamList", "children": _params(inner[1])},
                            ],
                        }
                    ],
                }
                if inner[0] is None:
                    rewritten = {
                        "type": "TermExpression",
                        "children": [{"type": "InvocationTerm", "children": [exists]}],
                    }
                else:
                    rewritten = {"type": "InvocationExpression", "children": [inner[0], exists]}
                if name == "exists":
                    return rewritten
                return {"type": "_Not", "children": [rewritten]}
    return node


def _function_name(invocation: dict) -> str | None:
    if invocation.get("type") != "FunctionInvocation":
        return None
    return _identifier(invocation["children"][0]["children"][0])


def _params(invocation: dict) -> list:
    functn = invocation["children"][0]["children"]
    return functn[1]["children"] if len(functn) > 1 else []


def _call_on(expression: dict) -> tuple[dict | None, dict] | None:
    """Split ``X.f()`` into (X, invocation of f) and a bare ``f()`` into (None, invocation)."""
    if expression.get("type") == "InvocationExpression":
        left, right = expression["children"]
        if right.get("type") == "FunctionInvocation":
            return left, right
        return None
    if expression.get("type") == "TermExpression":
        term = expression["children"][0]
        if term.get("type") == "InvocationTerm" and term["children"][0].get("type") == "FunctionInvocation":
            return None, term["children"][0]
    return None


# -- public API -------------------------------------------------------------------------------


def _parse(expression: str) -> dict | None:
    """fhirpathpy's ANTLR grammar and tree listener, but strict: the whole text must be one
    expression (fhirpathpy's own ``parse`` recovers, and evaluates ``name)`` as ``name``)."""
    from antlr4 import CommonTokenStream, InputStream
    from antlr4.error.ErrorListener import ErrorListener
    from antlr4.error.ErrorStrategy import BailErrorStrategy
    from antlr4.tree.Tree import ParseTreeWalker
    from fhirpathpy.parser.ASTPathListener import ASTPathListener
    from fhirpathpy.parser.generated.FHIRPathLexer import FHIRPathLexer
    from fhirpathpy.parser.generated.FHIRPathParser import FHIRPathParser

    class Strict(ErrorListener):
        def syntaxError(
            self, recognizer: Any, offending: Any, line: int, column: int, msg: str, e: Any
        ) -> None:
            raise _Unsupported(f"syntax error at {column}: {msg}")

    try:
        lexer = FHIRPathLexer(InputStream(expression))
        lexer.removeErrorListeners()
        lexer.addErrorListener(Strict())
        parser = FHIRPathParser(CommonTokenStream(lexer))
        parser.removeErrorListeners()
        parser.addErrorListener(Strict())
        parser._errHandler = BailErrorStrategy()
        tree = parser.entireExpression()
        listener = ASTPathListener()
        ParseTreeWalker().walk(listener, tree)
    except Exception:
        return None
    root = listener.parentStack[0]
    entire = root.get("children", [])
    if (
        len(entire) != 1
        or entire[0].get("type") != "EntireExpression"
        or len(entire[0].get("children", [])) != 1
    ):
        return None
    return entire[0]


def _export(items: list) -> list:
    out = []
    for item in items:
        if type(item) is Node:
            out.append(item.value if item.value is not None else item.ext)
        else:
            out.append(item)
    return out


def _context_key(node: Any, node_type: str | None) -> str | None:
    if (node_type is None or node_type in _ABSTRACT_CONTEXT) and type(node) is dict:
        rtype = node.get("resourceType")
        if isinstance(rtype, str):
            return rtype
    if node_type is not None and node_type.endswith("[x]"):
        return None
    return node_type


def _builder(expression: str) -> Callable[[str | None], Expr] | None:
    tree = _parse(expression)
    if tree is None:
        return None
    try:
        _Compiler().compile(tree, None)  # the subset does not depend on the context type
    except _Unsupported:
        return None
    except (KeyError, IndexError, ValueError, InvalidOperation):
        return None
    specialised: dict[str | None, Expr] = {}

    def build(context_type: str | None) -> Expr:
        fn = specialised.get(context_type)
        if fn is None:
            fn = specialised[context_type] = _Compiler().compile(tree, context_type)
        return fn

    return build


def try_compile(expression: str) -> Callable[[object, Hooks], list] | None:
    """Compile a FHIRPath expression into a Python closure, or None when it uses something outside
    the supported subset (the caller then falls back to fhirpathpy).

    The closure takes the context node (a JSON value, a ``Node``, or a list for a collection) and
    the hooks, whose ``node_type`` names the node's FHIR type, and returns the result collection
    as plain JSON values. It raises ``FhirPathEvaluationError`` where N1 says to signal an error.
    """
    build = _builder(expression)
    if build is None:
        return None
    cache: dict[str | None, Expr] = {}

    def evaluate(node: object, hooks: Hooks) -> list:
        node_type = hooks.node_type
        fn = cache.get(node_type) if node_type is not None and node_type not in _ABSTRACT_CONTEXT else None
        if fn is None:
            key = _context_key(node, node_type)
            fn = cache.get(key)
            if fn is None:
                fn = cache[key] = build(key)
        this = node if type(node) is list else [node]
        return _export(fn(this, _Env(hooks, this)))

    return evaluate


def try_compile_predicate(expression: str) -> Callable[[object, Hooks], bool] | None:
    """Like ``try_compile`` for an invariant: the closure answers whether the result is ``{true}``."""
    build = _builder(expression)
    if build is None:
        return None
    cache: dict[str | None, Expr] = {}

    def holds(node: object, hooks: Hooks) -> bool:
        node_type = hooks.node_type
        fn = cache.get(node_type) if node_type is not None and node_type not in _ABSTRACT_CONTEXT else None
        if fn is None:
            key = _context_key(node, node_type)
            fn = cache.get(key)
            if fn is None:
                fn = cache[key] = build(key)
        this = node if type(node) is list else [node]
        result = fn(this, _Env(hooks, this))
        if len(result) != 1:
            return False
        value = result[0]
        return value is True or (type(value) is Node and value.value is True)

    return holds
