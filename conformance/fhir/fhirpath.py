"""FHIRPath for the validator: expressions compiled to Python closures, with fhirpathpy behind them.

``FhirPath().compile(text)`` parses an expression once (with a strict parser: fhirpathpy's own
``parse`` silently accepts syntax errors) and checks at compile time that every function and
environment variable it names is supported. ``CompiledExpression.evaluate(node, ctx)`` runs the
closures of ``fhirpath_compiled`` (every constraint in the loaded packages compiles, at a few
microseconds per evaluation); only an expression outside that subset runs the parsed tree through
fhirpathpy's interpreter. Either way the node is one node of a resource, typed through
``EvalContext.node_type`` (a resource type, a datatype such as ``CodeableConcept``, a backbone
element path such as ``Immunization.performer``, or an element path, mapped to its type with the
R4 model), so ``is``/``as``/``ofType`` and choice elements (``value[x]``) work.

What this layer adds to fhirpathpy for that fallback, through its user invocation table:

- ``hasValue()`` (used by ele-1 everywhere), ``resolve()`` (through the ``resolver`` callback),
  ``memberOf(url)`` (through the ``member_of`` callback, one verdict per input item),
  ``conformsTo(url)`` (only for core resource-type profiles; otherwise empty = cannot tell) and
  ``htmlChecks()`` (always true: the XHTML narrative is checked by the structure validator, not by
  FHIRPath);
- ``as(type)`` as a *function* filters its input like ``ofType`` (as the HL7 Java engine does and as
  dom-3 needs on ``descendants()``); fhirpathpy raises on any input of more than one item;
- ``extension(url)`` returns every matching extension (fhirpathpy keeps only the first, and raises
  on an extension without ``url``);
- the environment variables ``%resource``, ``%rootResource``, ``%context``, ``%ucum``, ``%sct``,
  ``%loinc``, ``%`vs-name```, ``%`ext-name```.

The user functions are installed raw in the evaluation context (not through fhirpathpy's
``process_user_invocation_table``, which strips the typed nodes down to bare JSON and is rebuilt on
every call), so they see the model types and the primitive ``_name`` companions.

How fhirpathpy represents FHIR JSON primitives: navigating to ``birthDate`` yields the value *and*,
as a separate item, the ``_birthDate`` object (``{"id"?, "extension": [...]}``), typed with the
primitive's type. So a primitive with only extensions is one dict item, and one with both is two
items. ``hasValue()`` here treats such a companion as part of its value (a primitive with only
extensions has no value; value plus extensions is one valued primitive). To evaluate on a primitive
element yourself, pass its value, its companion dict, or the list ``[value, companion]`` as node,
with its type as ``node_type``. Known interpreter limits that remain: ``count()`` on such a primitive
counts two items, and ``children()`` skips ``_name`` companions (so an element whose only child is a
primitive carrying just extensions has, to fhirpathpy, no children: ele-1 is native for that reason
too, see ``native_invariants``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from antlr4 import CommonTokenStream, InputStream
from antlr4.error.ErrorListener import ErrorListener
from antlr4.tree.Tree import ParseTreeWalker
from fhirpathpy.engine import do_eval
from fhirpathpy.engine.invocations import invocation_registry as _BASE_FUNCTIONS
from fhirpathpy.engine.invocations.constants import constants as _constants
from fhirpathpy.engine.nodes import ResourceNode, TypeInfo
from fhirpathpy.models import models as _models
from fhirpathpy.parser.ASTPathListener import ASTPathListener
from fhirpathpy.parser.generated.FHIRPathLexer import FHIRPathLexer
from fhirpathpy.parser.generated.FHIRPathParser import FHIRPathParser

from conformance.errors import ConformanceError
from conformance.fhir.fhirpath_compiled import FhirPathEvaluationError, try_compile

R4_MODEL: dict = _models["r4"]
_PATH2TYPE: dict[str, str] = R4_MODEL["path2Type"]
_ELSEWHERE: dict[str, str] = R4_MODEL["pathsDefinedElsewhere"]

#: Types whose instances are JSON primitives (with an optional ``_name`` companion object).
PRIMITIVE_TYPES: frozenset[str] = frozenset(
    t for t in _PATH2TYPE.values() if t[:1].islower() or t.startswith("System.")
)

CORE_PROFILE_PREFIX = "http://hl7.org/fhir/StructureDefinition/"

_FIXED_VARIABLES: dict[str, str] = {
    "ucum": "http://unitsofmeasure.org",
    "sct": "http://snomed.info/sct",
    "loinc": "http://loinc.org",
}
_NODE_VARIABLES = frozenset({"context", "resource", "rootResource"})
_CLOCK_FUNCTIONS = frozenset({"now", "today", "timeOfDay"})


class FhirPathError(ConformanceError):
    """A FHIRPath expression that cannot be parsed, uses something unsupported, or fails to evaluate."""


@dataclass(frozen=True, slots=True)
class EvalContext:
    """Where a node sits: the resources behind %resource and %rootResource, and the node's FHIR type."""

    #: %resource: the resource that contains the node (a contained resource for nodes inside it)
    resource: dict
    #: %rootResource: the top resource (the container, or the Bundle for entries)
    root_resource: dict
    #: the node's type: "Immunization", "Extension", "Immunization.performer", "CodeableConcept" ...
    node_type: str | None = None


# -- parsing --------------------------------------------------------------------------------------


class _RaisingErrorListener(ErrorListener):
    """ANTLR listener that turns the first lexer or parser error into an exception."""

    def syntaxError(self, recognizer, offending_symbol, line, column, msg, e):
        raise _SyntaxProblem(f"at character {column + 1}: {msg}")


class _SyntaxProblem(Exception):
    pass


def _parse(expression: str) -> dict:
    """The fhirpathpy AST of a whole expression (the ``entireExpression`` rule: trailing junk is an error)."""
    listener = _RaisingErrorListener()
    lexer = FHIRPathLexer(InputStream(expression))
    lexer.removeErrorListeners()
    lexer.addErrorListener(listener)
    parser = FHIRPathParser(CommonTokenStream(lexer))
    parser.buildParseTrees = True
    parser.removeErrorListeners()
    parser.addErrorListener(listener)
    tree = parser.entireExpression()
    builder = ASTPathListener()
    ParseTreeWalker().walk(builder, tree)
    entire = builder.parentStack[0]["children"][0]  # the EntireExpression node
    return entire["children"][0]


def _walk(node: dict):
    yield node
    for child in node.get("children", ()):
        yield from _walk(child)


# -- evaluation helpers ---------------------------------------------------------------------------


def _type_of(node_type: str | None) -> str | None:
    """A node type as fhirpathpy's model wants it: element paths of datatypes become the type name."""
    if node_type is None or "." not in node_type:
        return node_type
    path = _ELSEWHERE.get(node_type, node_type)
    return _PATH2TYPE.get(path, path)


def _is_companion(item: Any) -> bool:
    """True for fhirpathpy's separate item holding a primitive's ``_name`` object (id/extensions)."""
    return isinstance(item, ResourceNode) and isinstance(item.data, dict) and item.path in PRIMITIVE_TYPES


def _data(item: Any) -> Any:
    return item.data if isinstance(item, ResourceNode) else item


def _no_trace(label: str, items: Any) -> None:
    """``trace()`` sink: fhirpathpy prints to stdout without one (dom-3 calls trace)."""


def _has_value(ctx: dict, inputs: list) -> bool:
    """hasValue(): a single FHIR primitive that has a value (not just extensions)."""
    value = None
    count = 0
    for item in inputs:
        data = _data(item)
        if data is None or _is_companion(item):
            continue
        count += 1
        value = data
    return count == 1 and not isinstance(value, dict | list)


def _html_checks(ctx: dict, inputs: list) -> bool:
    """htmlChecks(): true; the narrative's XHTML rules are checked by the structure validator."""
    return True


def _as_filter(ctx: dict, inputs: list, type_info: TypeInfo) -> list:
    """as(type) as a function: the items of that type (the Java engine's behaviour, needed by dom-3)."""
    TypeInfo.model = ctx["model"]
    return [item for item in inputs if TypeInfo.from_value(item).is_(type_info)]


def _extension(ctx: dict, inputs: list, url: Any) -> list:
    """extension(url): every extension with that url on the input items."""
    result = []
    for item in inputs:
        data = _data(item)
        if isinstance(data, dict):
            extensions = data.get("extension")
            if isinstance(extensions, list):
                result.extend(
                    ResourceNode.create_node(e, "Extension")
                    for e in extensions
                    if isinstance(e, dict) and e.get("url") == url
                )
    return result


def _conforms_to(ctx: dict, inputs: list, url: Any) -> list:
    """conformsTo(url): decided only for core resource-type profiles; otherwise empty (cannot tell)."""
    if not isinstance(url, str) or not url.startswith(CORE_PROFILE_PREFIX):
        return []
    type_name = url[len(CORE_PROFILE_PREFIX) :].partition("|")[0]
    result = []
    for item in inputs:
        data = _data(item)
        if not isinstance(data, dict) or "resourceType" not in data:
            return []
        result.append(data["resourceType"] == type_name)
    return result


# -- the public API -------------------------------------------------------------------------------


class FhirPath:
    """A FHIRPath engine over the R4 model, with the validator's resolve() and memberOf() hooks."""

    def __init__(
        self,
        *,
        resolver: Callable[[str, EvalContext], dict | None] | None = None,
        member_of: Callable[[object, str], bool | None] | None = None,
    ) -> None:
        self._resolver = resolver
        self._member_of = member_of
        self._compiled: dict[str, CompiledExpression] = {}
        self._functions: dict[str, dict] = {
            "hasValue": {"fn": _has_value},
            "htmlChecks": {"fn": _html_checks},
            "resolve": {"fn": self._resolve},
            "memberOf": {"fn": self._member_of_fn, "arity": {1: ["String"]}},
            "conformsTo": {"fn": _conforms_to, "arity": {1: ["String"]}},
            "as": {"fn": _as_filter, "arity": {1: ["TypeSpecifier"]}},
            "extension": {"fn": _extension, "arity": {1: ["String"]}},
        }
        self._known_functions = frozenset(_BASE_FUNCTIONS) | frozenset(self._functions)

    def compile(self, expression: str) -> CompiledExpression:
        """The compiled expression (memoised per text); FhirPathError if it cannot be used."""
        compiled = self._compiled.get(expression)
        if compiled is None:
            compiled = CompiledExpression(self, expression)
            self._compiled[expression] = compiled
        return compiled

    # -- user functions (they receive fhirpathpy's typed nodes) ----------------------------------

    def _resolve(self, ctx: dict, inputs: list) -> list:
        """resolve(): each Reference (its ``reference``) or reference string, through the resolver."""
        resolver = self._resolver
        if resolver is None:
            return []
        where = ctx["evalContext"]
        result = []
        for item in inputs:
            data = _data(item)
            reference = data.get("reference") if isinstance(data, dict) else data
            if isinstance(reference, str):
                target = resolver(reference, where)
                if isinstance(target, dict):
                    result.append(ResourceNode.create_node(target))
        return result

    def _member_of_fn(self, ctx: dict, inputs: list, url: Any) -> list:
        """memberOf(url): one verdict per code, Coding or CodeableConcept; no verdict when unknown."""
        member_of = self._member_of
        if member_of is None or not isinstance(url, str):
            return []
        result = []
        for item in inputs:
            if _is_companion(item):
                continue
            data = _data(item)
            if data is None:
                continue
            verdict = member_of(data, url)
            if verdict is not None:
                result.append(bool(verdict))
        return result


class _Hooks:
    """What the compiled closures need from an evaluation: the context and the engine's callbacks."""

    __slots__ = ("_ctx", "_engine", "node_type", "resource", "root_resource")

    def __init__(self, engine: FhirPath, ctx: EvalContext) -> None:
        self._engine = engine
        self._ctx = ctx
        self.resource = ctx.resource
        self.root_resource = ctx.root_resource
        mapped = _type_of(ctx.node_type)  # an element path of a datatype becomes the type name
        self.node_type = ctx.node_type if mapped in ("BackboneElement", "Element") else mapped

    def resolve(self, reference: str) -> dict | None:
        """The resolver's answer for a reference, or None."""
        resolver = self._engine._resolver
        return resolver(reference, self._ctx) if resolver is not None else None

    def member_of(self, node: object, valueset: str) -> bool | None:
        """The terminology's answer, or None (cannot tell)."""
        member_of = self._engine._member_of
        return member_of(node, valueset) if member_of is not None else None


class CompiledExpression:
    """One parsed and checked FHIRPath expression, ready to evaluate many times."""

    __slots__ = (
        "_ast",
        "_base_ctx",
        "_engine",
        "_fast",
        "_node_vars",
        "_resets_clock",
        "_static_vars",
        "expression",
    )

    def __init__(self, engine: FhirPath, expression: str) -> None:
        self.expression = expression
        self._engine = engine
        self._fast = try_compile(expression)  # Python closures; None falls back to the interpreter
        try:
            self._ast = _parse(expression)
        except _SyntaxProblem as exc:
            raise FhirPathError(f"FHIRPath syntax error in '{expression}': {exc}") from None
        except Exception as exc:  # the generated parser's own failures
            raise FhirPathError(f"FHIRPath syntax error in '{expression}': {exc}") from None
        functions: set[str] = set()
        variables: set[str] = set()
        for node in _walk(self._ast):
            kind = node.get("type")
            if kind == "Functn":
                functions.add(node["children"][0]["text"])
            elif kind == "ExternalConstant":
                if not node.get("children"):
                    raise FhirPathError(
                        f"unsupported environment variable form in '{expression}': use %name or %`name`"
                    )
                variables.add(node["children"][0]["text"].strip('`"'))
        unknown = sorted(functions - engine._known_functions)
        if unknown:
            raise FhirPathError(f"unsupported FHIRPath function {', '.join(unknown)}() in '{expression}'")
        static: dict[str, Any] = {}
        for name in variables - _NODE_VARIABLES:
            if name in _FIXED_VARIABLES:
                static[name] = _FIXED_VARIABLES[name]
            elif name.startswith("vs-"):
                static[name] = "http://hl7.org/fhir/ValueSet/" + name[3:]
            elif name.startswith("ext-"):
                static[name] = "http://hl7.org/fhir/StructureDefinition/" + name[4:]
            else:
                raise FhirPathError(f"unknown environment variable %{name} in '{expression}'")
        self._static_vars = static
        self._node_vars = tuple(sorted(variables & _NODE_VARIABLES))
        self._resets_clock = bool(functions & _CLOCK_FUNCTIONS)
        self._base_ctx = {
            "model": R4_MODEL,
            "userInvocationTable": engine._functions,
            "traceFn": _no_trace,
        }

    def __repr__(self) -> str:
        return f"CompiledExpression({self.expression!r})"

    def _run(self, node: object, ctx: EvalContext) -> list:
        path = _type_of(ctx.node_type)
        if isinstance(node, list):
            root = [ResourceNode.create_node(item, path) for item in node]
        else:
            root = [ResourceNode.create_node(node, path)]
        if self._node_vars:
            variables = dict(self._static_vars)
            for name in self._node_vars:
                if name == "context":
                    variables[name] = root
                elif name == "resource":
                    variables[name] = ResourceNode.create_node(ctx.resource)
                else:
                    variables[name] = ResourceNode.create_node(ctx.root_resource)
        else:
            variables = self._static_vars  # never written by the evaluator
        fctx = dict(self._base_ctx)
        fctx["dataRoot"] = root
        fctx["vars"] = variables
        fctx["evalContext"] = ctx
        if self._resets_clock:
            _constants.reset()
        # fhirpathpy keeps the model in a class attribute that only is/as set: ofType() and the
        # type checks need it even when no is/as ran before in this process.
        TypeInfo.model = R4_MODEL
        try:
            return do_eval(fctx, root, self._ast)
        except FhirPathError:
            raise
        except Exception as exc:
            raise FhirPathError(f"error evaluating '{self.expression}': {exc}") from exc

    def evaluate(self, node: object, ctx: EvalContext) -> list:
        """The result collection as plain JSON values (primitive ``_name`` companions left out)."""
        if self._fast is not None:
            try:
                return self._fast(node, _Hooks(self._engine, ctx))
            except FhirPathEvaluationError as exc:
                raise FhirPathError(f"error evaluating '{self.expression}': {exc}") from exc
        result = []
        for item in self._run(node, ctx):
            if _is_companion(item):
                continue
            data = _data(item)
            if data is not None:
                result.append(data)
        return result

    def is_true(self, node: object, ctx: EvalContext) -> bool:
        """The result as a boolean, as the HL7 Java engine's convertToBoolean: empty is false, a
        single boolean is itself, any other non-empty result is true."""
        result = self.evaluate(node, ctx)
        if len(result) == 1 and isinstance(result[0], bool):
            return result[0]
        return bool(result)
