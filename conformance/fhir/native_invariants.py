"""Native Python equivalents of the core invariants the validator checks on almost every node.

ele-1 holds on every element, ext-1 on every extension and dom-2..dom-6 on every DomainResource:
through the FHIRPath interpreter they would cost most of the validation budget (dom-3 alone takes
milliseconds, see ``tests/test_native_invariants.py``). ``NATIVE`` maps ``(key, expression)``, with
the exact expression text of the R4 core snapshots, to a function ``(node, ctx) -> bool``; a profile
that rewrites one of these invariants has a different text and so falls back to FHIRPath. Each
function gives the verdict the FHIR specification gives for the expression on FHIR JSON; the tests
check it against the FHIRPath evaluation of the same text on many inputs.

Primitives: in FHIR JSON a primitive element is a value plus an optional ``_name`` sibling object
holding its ``id`` and ``extension``. ``ele1_primitive(value, underscore)`` checks ele-1 on such an
element (a value, or at least one extension); the ``NATIVE`` ele-1 function handles a dict as a
complex element, except when ``ctx.node_type`` names a primitive type (then the dict is the
``_name`` companion), a list ``[value, companion]`` and a bare value as a primitive. JSON ``null``
and ``[]`` count as absent, as they do in FHIR JSON.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache
from typing import Any

from conformance.fhir.fhirpath import PRIMITIVE_TYPES, R4_MODEL, EvalContext

ELE_1 = "hasValue() or (children().count() > id.count())"
EXT_1 = "extension.exists() != value.exists()"
DOM_2 = "contained.contained.empty()"
DOM_3 = (
    "contained.where((('#'+id in (%resource.descendants().reference | %resource.descendants().as(canonical) "
    "| %resource.descendants().as(uri) | %resource.descendants().as(url))) or "
    "descendants().where(reference = '#').exists() or descendants().where(as(canonical) = '#').exists() or "
    "descendants().where(as(canonical) = '#').exists()).not()).trace('unmatched', id).empty()"
)
DOM_4 = "contained.meta.versionId.empty() and contained.meta.lastUpdated.empty()"
DOM_5 = "contained.meta.security.empty()"
DOM_6 = "text.`div`.exists()"

_PATH2TYPE: dict[str, str] = R4_MODEL["path2Type"]
_ELSEWHERE: dict[str, str] = R4_MODEL["pathsDefinedElsewhere"]
_EXTENSION_VALUE_KEYS = frozenset(
    prefix + "value" + suffix
    for suffix in R4_MODEL["choiceTypePaths"]["Extension.value"]
    for prefix in ("", "_")
)
#: ``as(uri)`` keeps uri and its specialisations; ``as(canonical)`` and ``as(url)`` add nothing more.
_URI_TYPES = frozenset({"uri", "url", "canonical", "oid", "uuid"})


def _present(value: Any) -> bool:
    """An element is there: FHIR JSON has no null or empty-array elements."""
    return value is not None and value != []


def _items(value: Any) -> list:
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


# -- ele-1 ----------------------------------------------------------------------------------------


def ele1_primitive(value: object, underscore: dict | None) -> bool:
    """ele-1 on a JSON primitive element: it has a value or its ``_name`` object has an extension."""
    if value is not None:
        return True
    if not isinstance(underscore, dict):
        return False
    return any(key != "id" and _present(child) for key, child in underscore.items())


def ele1_complex(node: dict) -> bool:
    """ele-1 on a complex element: it has a child element other than ``id``."""
    return any(key != "id" and _present(child) for key, child in node.items())


def ele1(node: object, ctx: EvalContext) -> bool:
    """``hasValue() or (children().count() > id.count())``."""
    if isinstance(node, dict):
        if ctx.node_type in PRIMITIVE_TYPES:
            return ele1_primitive(None, node)
        return ele1_complex(node)
    if isinstance(node, list):  # [value, companion] as fhirpathpy represents a primitive with extensions
        value = next((item for item in node if item is not None and not isinstance(item, dict)), None)
        companion = next((item for item in node if isinstance(item, dict)), None)
        return ele1_primitive(value, companion)
    return node is not None


# -- ext-1 ----------------------------------------------------------------------------------------


def ext1(node: object, ctx: EvalContext) -> bool:
    """``extension.exists() != value.exists()``: an extension has either a value or sub-extensions."""
    if not isinstance(node, dict):
        return False
    has_value = False
    for key, child in node.items():
        if key in _EXTENSION_VALUE_KEYS and _present(child):
            has_value = True
            break
    return _present(node.get("extension")) != has_value


# -- dom-2 .. dom-6 -------------------------------------------------------------------------------


def _contained(node: object) -> list:
    return _items(node.get("contained")) if isinstance(node, dict) else []


def dom2(node: object, ctx: EvalContext) -> bool:
    """``contained.contained.empty()``: contained resources do not contain resources."""
    return not any(isinstance(c, dict) and _present(c.get("contained")) for c in _contained(node))


def dom4(node: object, ctx: EvalContext) -> bool:
    """No contained resource has meta.versionId or meta.lastUpdated."""
    for resource in _contained(node):
        if not isinstance(resource, dict):
            continue
        for meta in _items(resource.get("meta")):
            if isinstance(meta, dict) and any(
                _present(meta.get(key)) for key in ("versionId", "_versionId", "lastUpdated", "_lastUpdated")
            ):
                return False
    return True


def dom5(node: object, ctx: EvalContext) -> bool:
    """``contained.meta.security.empty()``: no contained resource has security labels."""
    for resource in _contained(node):
        if not isinstance(resource, dict):
            continue
        for meta in _items(resource.get("meta")):
            if isinstance(meta, dict) and _present(meta.get("security")):
                return False
    return True


def dom6(node: object, ctx: EvalContext) -> bool:
    """``text.`div`.exists()``: the resource has a narrative (a warning-level best practice)."""
    if not isinstance(node, dict):
        return False
    return any(
        isinstance(text, dict) and (_present(text.get("div")) or _present(text.get("_div")))
        for text in _items(node.get("text"))
    )


def dom3(node: object, ctx: EvalContext) -> bool:
    """dom-3: every contained resource with an id is referenced as ``#id`` from somewhere in
    %resource (a ``reference`` at any depth, also inside contained resources, or a uri/url/canonical
    value), or itself refers to its container with ``#`` (a ``reference`` or a canonical)."""
    contained = _contained(node)
    if not contained:
        return True
    pending = [c for c in contained if isinstance(c, dict) and isinstance(c.get("id"), str)]
    if not pending:
        return True  # '#' + {} is empty: a contained resource without id is not judged by dom-3
    unmatched = _unreferenced(ctx.resource, {"#" + c["id"] for c in pending})
    if not unmatched:
        return True
    pending = [c for c in pending if "#" + c["id"] in unmatched]
    root = ctx.resource
    uris: set[str] = set()
    _collect_typed(root, _node_type(root, None), _URI_TYPES, uris)
    for resource in pending:
        if "#" + resource["id"] in uris:
            continue
        if _refers_to_container(resource):
            continue
        return False
    return True


def _unreferenced(root: dict, wanted: set[str]) -> set[str]:
    """``wanted`` less every string ``reference`` of an object strictly below ``root`` (stops early)."""
    stack = [root]
    while stack and wanted:
        value = stack.pop()
        for child in value.values():
            if isinstance(child, dict):
                items: Any = (child,)
            elif isinstance(child, list):
                items = child
            else:
                continue
            for item in items:
                if isinstance(item, dict):
                    reference = item.get("reference")
                    if isinstance(reference, str) and reference in wanted:
                        wanted.discard(reference)
                    stack.append(item)
    return wanted


def _node_type(value: dict, computed: str | None) -> str | None:
    resource_type = value.get("resourceType")
    return resource_type if isinstance(resource_type, str) else computed


@lru_cache(maxsize=8192)
def _child_type(parent: str | None, key: str) -> str | None:
    """The model type of ``parent.key``, as the interpreter's ``children()`` computes it."""
    if parent is None:
        return None
    if key == "extension":
        return "Extension"
    path = f"{parent}.{key}"
    path = _ELSEWHERE.get(path, path)
    return _PATH2TYPE.get(path, path)


def _collect_typed(value: dict, value_type: str | None, types: frozenset[str], into: set[str]) -> None:
    """The string values strictly below ``value`` whose model type is in ``types``."""
    for key, child in value.items():
        child_type = _child_type(value_type, key)
        for item in child if isinstance(child, list) else (child,):
            if isinstance(item, dict):
                _collect_typed(item, _node_type(item, child_type), types, into)
            elif isinstance(item, str) and child_type in types:
                into.add(item)


def _refers_to_container(resource: dict) -> bool:
    """``descendants().where(reference = '#')`` or a canonical ``'#'`` below the contained resource."""
    if not _unreferenced(resource, {"#"}):
        return True
    canonicals: set[str] = set()
    _collect_typed(resource, _node_type(resource, None), frozenset({"canonical"}), canonicals)
    return "#" in canonicals


NATIVE: dict[tuple[str, str], Callable[[object, EvalContext], bool]] = {
    ("ele-1", ELE_1): ele1,
    ("ext-1", EXT_1): ext1,
    ("dom-2", DOM_2): dom2,
    ("dom-3", DOM_3): dom3,
    ("dom-4", DOM_4): dom4,
    ("dom-5", DOM_5): dom5,
    ("dom-6", DOM_6): dom6,
}
