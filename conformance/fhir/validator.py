"""The FHIR R4 profile validator.

``Validator(packages).validate(resource, profile=None) -> Outcome`` walks a resource once against
the compiled plan of its profile (``plan.py``): JSON shape, unknown elements, choice types, primitive
formats, cardinality, fixed and pattern values, slicing, extensions, bindings, invariants (FHIRPath,
with native equivalents of the hot core ones), references and Belgian identifiers. Each finding is an
``Issue`` with the HL7 validator's kind of location (``Immunization.extension[1].value.ofType(Reference)``).
Plans are compiled once per profile and kept, so one Validator serves thousands of resources.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import Any

import orjson

from conformance.belgium.identifiers import IDENTIFIER_CHECKS
from conformance.errors import ConfigurationError
from conformance.fhir.bundles import BundleIndex, bundle_issues, duplicate_id_issues
from conformance.fhir.definitions import PackageSet
from conformance.fhir.fhirpath import EvalContext, FhirPath, FhirPathError
from conformance.fhir.inputs import parse_error_issue
from conformance.fhir.native_invariants import NATIVE, ele1_primitive
from conformance.fhir.outcome import Issue, Outcome, deduplicate
from conformance.fhir.plan import CORE, Constraint, ElementRule, PlanCache, ProfilePlan, TypeRef
from conformance.fhir.primitives import check_primitive
from conformance.fhir.terminology import CodeCheck, Terminology

_BELGIAN_RULES = {
    system: "be-identifier-" + system.rstrip("/").rsplit("/", 1)[-1] for system in IDENTIFIER_CHECKS
}
_RELATIVE_REF = re.compile(r"^([A-Z][A-Za-z]+)/[A-Za-z0-9\-.]{1,64}(/_history/[A-Za-z0-9\-.]{1,64})?$")
# any absolute URI (RESTful URLs expose the target type); relative references are Type/id
_ABSOLUTE_REF = re.compile(
    r"^[a-zA-Z][a-zA-Z0-9+.\-]*:(?://)?\S+?(?:/([A-Z][A-Za-z]+)/[A-Za-z0-9\-.]{1,64}(?:/_history/\S+)?)?$"
)
_URN_REF = re.compile(r"^urn:(uuid:[0-9a-fA-F\-]{36}|oid:[0-2](\.(0|[1-9][0-9]*))+)$")
_EXTENSION_URL = "http://hl7.org/fhir/StructureDefinition/Extension"
_BINDABLE = frozenset({"code", "Coding", "CodeableConcept", "string", "uri", "Quantity"})
MAX_DEPTH = 60  # nested resources and elements; deeper input is reported, not walked


@dataclass(slots=True)
class _Scope:
    """The resource being walked: %resource, %rootResource, and where its issues go."""

    resource: dict
    root: dict
    profile: str
    issues: list[Issue]
    bundle: dict | None = None
    visiting: set[int] = field(default_factory=set)
    base_path: str = ""  # the location of ``resource`` in what is validated, e.g. "Immunization.contained[0]"


_Evaluator = Callable[[Any, EvalContext], bool]


class Validator:
    """A reusable validator over a package set (profiles are compiled once and kept)."""

    def __init__(
        self,
        packages: PackageSet,
        *,
        terminology: Terminology | None = None,
        strict_identifiers: bool = False,
        resources: Iterable[dict] = (),
        best_practice: str = "information",
    ) -> None:
        """``best_practice``: how to report invariants marked as best practice (dom-6, "a resource
        should have narrative"): "information" (default), "warning", "error" or "ignore"."""
        if best_practice not in ("information", "warning", "error", "ignore"):
            raise ConfigurationError(
                f"best_practice must be information, warning, error or ignore, not {best_practice!r}"
            )
        self.best_practice = best_practice
        self.packages = packages
        self.plans = PlanCache(packages)
        self.terminology = terminology or Terminology(packages)
        self.strict_identifiers = strict_identifiers
        self.fhirpath = FhirPath(resolver=self._resolve_for_fhirpath, member_of=self.terminology.member_of)
        self._constraints: dict[tuple[int, str], list[tuple[Constraint, _Evaluator | None, str | None]]] = {}
        self._target_types: dict[str, str | None] = {}
        self._underscore_names: dict[int, dict[str, tuple[ElementRule, TypeRef]]] = {}
        self._rules_at: dict[tuple[int, str], ElementRule | None] = {}
        self._known: dict[str, dict] = {}
        self._unresolved: list[str] = []
        self._context_verdicts: dict[tuple[str, str, str], bool] = {}
        self._system_problems: dict[str, str | None] = {}
        self._bundle_indexes: dict[int, BundleIndex] = {}
        for resource in resources:
            self.add_resource(resource)

    def add_resource(self, resource: dict, full_url: str | None = None) -> None:
        """Make a resource resolvable (as ``Type/id`` or its full URL) by references in what is validated."""
        rtype, rid = resource.get("resourceType"), resource.get("id")
        if isinstance(rtype, str) and isinstance(rid, str):
            self._known[f"{rtype}/{rid}"] = resource
        if full_url:
            self._known[full_url] = resource

    # -- entry points ----------------------------------------------------------------------

    def profile_plan(self, profile: str) -> ProfilePlan:
        """The compiled plan of a profile URL (``url`` or ``url|version``); an error if unknown."""
        plan = self.plans.get(profile)
        if plan is None and profile in self.plans.problems:
            raise ConfigurationError(f"profile {profile} cannot be used: {self.plans.problems[profile]}")
        if plan is None:
            known = self.packages.versions(profile)
            hint = f" (versions present: {', '.join(known)})" if known else ""
            raise ConfigurationError(
                f"unknown profile {profile}{hint}: no such StructureDefinition is loaded"
            )
        return plan

    def validate(self, resource: Any, profile: str | None = None) -> Outcome:
        """Validate one resource (a parsed dict, or raw JSON bytes) against ``profile`` or its own profiles.

        Without ``profile``, the resource is checked against each profile in its ``meta.profile``
        that is loaded, otherwise against the base definition of its resource type. An unknown
        ``profile`` raises ConfigurationError: that is a usage problem, not a finding.
        """
        explicit = self.profile_plan(profile) if profile else None
        if isinstance(resource, bytes):
            try:
                resource = orjson.loads(resource)
            except orjson.JSONDecodeError as exc:
                return Outcome([parse_error_issue(exc, resource)], label="(not JSON)")
        outcome = Outcome(label=_label(resource))
        if not isinstance(resource, dict):
            outcome.issues.append(Issue("fatal", "structure", "", "the content is not a JSON object"))
            return outcome
        issues: list[Issue] = []
        rtype = resource.get("resourceType")
        base = self._resource_base(rtype, "", issues)
        if base is None:
            outcome.issues = issues
            return outcome
        self._bundle_indexes.clear()
        issues.extend(duplicate_id_issues(resource, rtype))
        if rtype == "Bundle":
            issues.extend(bundle_issues(resource, rtype))
        plans = [explicit] if explicit else self._declared_profiles(resource, rtype, "", issues) or [base]
        for plan in plans:
            if plan.type != rtype:
                issues.append(
                    Issue(
                        "error",
                        "structure",
                        rtype,
                        f"profile {plan.label} is for {plan.type}, not {rtype}",
                        "profile-type",
                        plan.label,
                    )
                )
                continue
            issues.extend(
                Issue(
                    "error", "processing", rtype, f"profile {plan.label}: {problem}", "snapshot", plan.label
                )
                for problem in self.plans.snapshot_problems.get(plan.url, ())
            )
            scope = _Scope(resource, resource, plan.label, issues, base_path=rtype)
            if rtype == "Bundle":
                scope.bundle = resource
            try:
                self._walk_resource(resource, plan, rtype, scope, 0)
            except RecursionError:
                issues.append(
                    Issue("error", "too-costly", rtype, "the resource is nested too deeply to validate")
                )
        outcome.issues = deduplicate(issues)
        return outcome

    # -- resources ---------------------------------------------------------------------------

    def _resource_base(self, rtype: Any, path: str, issues: list[Issue]) -> ProfilePlan | None:
        where = path or "(resource)"
        if not isinstance(rtype, str) or not rtype:
            issues.append(
                Issue("error", "structure", where, "the resource has no resourceType", "resourceType")
            )
            return None
        plan = self.plans.base(rtype)
        if plan is None or plan.kind != "resource" or plan.derivation == "constraint":
            issues.append(
                Issue("error", "structure", where, f"unknown resourceType '{rtype}'", "resourceType")
            )
            return None
        return plan

    def _declared_profiles(
        self, resource: dict, rtype: str, path: str, issues: list[Issue]
    ) -> list[ProfilePlan]:
        meta = resource.get("meta")
        declared = meta.get("profile") if isinstance(meta, dict) else None
        plans = []
        for index, url in enumerate(declared if isinstance(declared, list) else ()):
            if not isinstance(url, str):
                continue
            plan = self.plans.get(url)
            if plan is None:
                why = self.plans.problems.get(url, "it is not loaded")
                issues.append(
                    Issue(
                        "warning",
                        "not-supported",
                        f"{path or rtype}.meta.profile[{index}]",
                        f"profile {url} was not checked: {why}",
                        "meta-profile",
                    )
                )
            elif plan.type == rtype:
                plans.append(plan)
        return plans

    def _walk_resource(self, resource: dict, plan: ProfilePlan, path: str, scope: _Scope, depth: int) -> None:
        start = len(scope.issues)
        self._walk_resource_content(resource, plan, path, scope, depth)
        issues = scope.issues
        for index in range(start, len(issues)):  # every finding names the profile it was checked against
            if issues[index].profile is None:
                issues[index] = replace(issues[index], profile=plan.label)

    def _walk_resource_content(
        self, resource: dict, plan: ProfilePlan, path: str, scope: _Scope, depth: int
    ) -> None:
        self._walk_children(resource, plan.root, plan, path, scope, depth, is_resource=True)
        self._check_constraints(resource, plan.root, None, plan.type, path, scope)
        url = resource.get("url")
        if isinstance(url, str) and "version" in plan.root.children and not _is_absolute(url):
            # canonical resources: "url: An absolute URI that is used to identify this ..."
            scope.issues.append(
                Issue(
                    "error",
                    "invalid",
                    f"{path}.url",
                    f"the canonical URL must be an absolute URI, not '{url}'",
                    "canonical-url",
                )
            )

    def _nested_resource(
        self, item: Any, type_ref: TypeRef, path: str, scope: _Scope, depth: int, contained: bool
    ) -> None:
        """A resource inside a resource: contained, Bundle.entry.resource, Parameters.parameter.resource.

        A contained resource keeps its container as %rootResource; any other nested resource is a
        root of its own (FHIRPath's %rootResource is about containment, not Bundles).
        """
        if not isinstance(item, dict):
            scope.issues.append(Issue("error", "structure", path, "a resource must be a JSON object"))
            return
        rtype = item.get("resourceType")
        base = self._resource_base(rtype, path, scope.issues)
        if base is None:
            return
        scope.issues.extend(duplicate_id_issues(item, path))
        if rtype == "Bundle":
            scope.issues.extend(bundle_issues(item, path))
        if type_ref.code not in ("Resource", "DomainResource", rtype):
            scope.issues.append(
                Issue("error", "structure", path, f"a {type_ref.code} is expected here, not {rtype}")
            )
        plans = [self.plans.get(p) for p in type_ref.profiles] if type_ref.profiles else []
        plans = [p for p in plans if p is not None and p.type == rtype]
        plans = plans or self._declared_profiles(item, rtype, path, scope.issues) or [base]
        for plan in plans:
            root = scope.root if contained else item
            inner = _Scope(item, root, plan.label, scope.issues, scope.bundle, scope.visiting, path)
            if rtype == "Bundle":  # references inside a Bundle resolve against the innermost one
                inner.bundle = item
            self._walk_resource(item, plan, path, inner, depth + 1)

    # -- complex elements ----------------------------------------------------------------------

    def _children_owner(
        self, rule: ElementRule, type_ref: TypeRef, plan: ProfilePlan
    ) -> tuple[ElementRule, ProfilePlan] | None:
        if rule.children:
            return rule, plan
        if rule.content_reference:
            target = plan.by_id.get(rule.content_reference.rsplit("#", 1)[-1])
            if target is not None:
                return target, plan
        type_plan = self._type_plan(type_ref)
        return (type_plan.root, type_plan) if type_plan else None

    def _type_plan(self, type_ref: TypeRef) -> ProfilePlan | None:
        for profile in type_ref.profiles:
            plan = self.plans.get(profile)
            if plan is not None:
                return plan
        return self.plans.base(type_ref.code)

    def _walk_children(
        self,
        obj: dict,
        owner: ElementRule,
        plan: ProfilePlan,
        path: str,
        scope: _Scope,
        depth: int,
        is_resource: bool = False,
        names: dict[str, tuple[ElementRule, TypeRef]] | None = None,
    ) -> None:
        if depth > MAX_DEPTH:
            scope.issues.append(
                Issue("error", "too-costly", path, f"content nested more than {MAX_DEPTH} levels deep")
            )
            return
        names = owner.json_names if names is None else names
        found: dict[int, tuple[ElementRule, list[tuple[str, TypeRef, Any, Any]]]] = {}
        for key, value in obj.items():
            if is_resource and key == "resourceType":
                continue
            underscore = None
            if key[:1] == "_":
                base_key = key[1:]
                if base_key in obj:
                    continue  # validated with its value
                entry = names.get(base_key)
                if entry is None or not entry[1].is_primitive:
                    scope.issues.append(
                        Issue("error", "structure", path, f"unrecognised property '{key}'", "unknown-element")
                    )
                    continue
                key, underscore, value = base_key, value, None
            else:
                entry = names.get(key)
                if entry is None:
                    scope.issues.append(
                        Issue("error", "structure", path, f"unrecognised property '{key}'", "unknown-element")
                    )
                    continue
                if entry[1].is_primitive:
                    underscore = obj.get("_" + key)
                    if underscore is None and "_" + key in obj:
                        scope.issues.append(
                            Issue(
                                "error", "structure", f"{path}.{key}", "null is not allowed here", "json-null"
                            )
                        )
            child = entry[0]
            slot = found.get(id(child))
            if slot is None:
                found[id(child)] = (child, [(key, entry[1], value, underscore)])
            else:
                slot[1].append((key, entry[1], value, underscore))
        for child in owner.required:
            if id(child) not in found:
                scope.issues.append(
                    Issue(
                        "error",
                        "required",
                        path,
                        f"{child.path}: minimum required = {child.min}, but only found 0",
                        "cardinality",
                        scope.profile,
                    )
                )
        for child, instances in found.values():
            self._validate_child(obj, child, instances, plan, path, scope, depth)

    def _validate_child(
        self,
        obj: dict,
        child: ElementRule,
        instances: list[tuple[str, TypeRef, Any, Any]],
        plan: ProfilePlan,
        path: str,
        scope: _Scope,
        depth: int,
    ) -> None:
        issues = scope.issues
        items: list[tuple[Any, Any, TypeRef, str]] = []
        for key, type_ref, value, underscore in instances:
            base_path = f"{path}.{child.name}"
            if child.choice:
                base_path += f".ofType({type_ref.code})"
            if child.array:
                if value is None and underscore is None:
                    issues.append(
                        Issue("error", "structure", base_path, "null is not allowed here", "json-null")
                    )
                    continue
                if value is not None and not isinstance(value, list):
                    issues.append(
                        Issue("error", "structure", base_path, f"'{key}' must be a JSON array", "json-array")
                    )
                    value = [value]
                if underscore is not None and not isinstance(underscore, list):
                    issues.append(
                        Issue("error", "structure", base_path, f"'_{key}' must be a JSON array", "json-array")
                    )
                    underscore = [underscore]
                values = value if value is not None else [None] * len(underscore)
                extras = underscore if underscore is not None else ()
                if not values and not extras:
                    issues.append(
                        Issue(
                            "error",
                            "structure",
                            base_path,
                            f"array '{key}' is empty: leave the property out instead",
                            "json-empty",
                        )
                    )
                    continue
                if extras and len(extras) != len(values):
                    issues.append(
                        Issue(
                            "error",
                            "structure",
                            base_path,
                            f"'_{key}' must have as many entries as '{key}'",
                            "json-primitive",
                        )
                    )
                for i, item in enumerate(values):
                    items.append(
                        (item, extras[i] if i < len(extras) else None, type_ref, f"{base_path}[{i}]")
                    )
            else:
                if isinstance(value, list) or isinstance(underscore, list):
                    issues.append(
                        Issue(
                            "error",
                            "structure",
                            base_path,
                            f"'{key}' must be a single value, not a JSON array",
                            "json-array",
                        )
                    )
                    continue
                items.append((value, underscore, type_ref, base_path))
        count = len(items)
        if count < child.min:
            issues.append(
                Issue(
                    "error",
                    "required",
                    path,
                    f"{child.path}: minimum required = {child.min}, but only found {count}",
                    "cardinality",
                    scope.profile,
                )
            )
        if child.max is not None and count > child.max:
            if child.max == 0:
                message = f"{child.path} is not allowed (max 0), but found {count}"
            elif child.choice and len(instances) > 1:
                message = f"{child.path}: only one of {', '.join(k for k, *_ in instances)} may be present"
            else:
                message = f"{child.path}: maximum allowed = {child.max}, but found {count}"
            issues.append(Issue("error", "structure", path, message, "cardinality", scope.profile))
        if child.slices:
            self._validate_slices(obj, child, items, plan, path, scope, depth)
            return
        for item, underscore, type_ref, item_path in items:
            self._validate_item(item, underscore, child, type_ref, plan, item_path, scope, depth)

    def _validate_item(
        self,
        item: Any,
        underscore: Any,
        rule: ElementRule,
        type_ref: TypeRef,
        plan: ProfilePlan,
        path: str,
        scope: _Scope,
        depth: int,
    ) -> None:
        if type_ref.is_primitive:
            self._validate_primitive(item, underscore, rule, type_ref, plan, path, scope, depth)
            return
        issues = scope.issues
        if item is None:
            issues.append(Issue("error", "structure", path, "null is not allowed here", "json-null"))
            return
        if type_ref.code in ("Resource", "DomainResource") or (
            type_ref.code[:1].isupper() and self._is_resource_type(type_ref.code)
        ):
            self._nested_resource(item, type_ref, path, scope, depth, contained=rule.name == "contained")
            return
        if not isinstance(item, dict):
            issues.append(
                Issue("error", "structure", path, f"a {type_ref.code} must be a JSON object", "json-object")
            )
            return
        if not item:
            issues.append(Issue("error", "structure", path, "an object must have some content", "json-empty"))
            return
        if type_ref.code == "Extension":
            if not type_ref.profiles and not rule.children:
                type_ref = self._extension_type(item, rule, path, scope)
            if type_ref.profiles:
                self._check_extension_context(type_ref.profiles[0], rule, path, scope)
        owner = self._children_owner(rule, type_ref, plan)
        if owner is None:
            issues.append(
                Issue(
                    "warning", "not-supported", path, f"no definition for type {type_ref.code}; not checked"
                )
            )
            return
        owner_rule, owner_plan = owner
        self._walk_children(item, owner_rule, owner_plan, path, scope, depth + 1)
        if rule.fixed_key is not None and item != rule.fixed:
            issues.append(
                Issue(
                    "error",
                    "value",
                    path,
                    f"value must be exactly {_short(rule.fixed)}",
                    "fixed",
                    scope.profile,
                )
            )
        if rule.pattern_key is not None and not matches_pattern(item, rule.pattern):
            issues.append(
                Issue(
                    "error",
                    "value",
                    path,
                    f"value must match the pattern {_short(rule.pattern)}",
                    "pattern",
                    scope.profile,
                )
            )
        code = type_ref.code
        if rule.binding_valueset and code in _BINDABLE:
            self._check_binding(item, code, rule, path, scope)
        if code == "Coding":
            self._check_coding_system(item, path, scope)
        elif code == "CodeableConcept":
            for i, coding in enumerate(item.get("coding") or ()):
                if isinstance(coding, dict):
                    self._check_coding_system(coding, f"{path}.coding[{i}]", scope)
        elif code == "Identifier":
            self._check_identifier(item, path, scope)
        elif code == "Attachment":
            self._check_attachment(item, path, scope)
        elif code == "Reference":
            self._check_reference(item, type_ref, path, scope, depth)
        if any(value != [] for value in item.values()):  # only empty arrays: already reported as such
            self._check_constraints(item, rule, type_ref, _node_type(rule, type_ref), path, scope)

    def _is_resource_type(self, code: str) -> bool:
        plan = self.plans.base(code)
        return plan is not None and plan.kind == "resource"

    def _extension_type(self, item: dict, rule: ElementRule, path: str, scope: _Scope) -> TypeRef:
        """The definition an extension is checked against: the one its url names, when loaded."""
        url = item.get("url")
        if not isinstance(url, str):
            return TypeRef("Extension")  # the missing url is reported by Extension.url's cardinality
        plan = self.plans.get(url)
        if plan is not None and plan.type == "Extension":
            return TypeRef("Extension", (url,))
        modifier = rule.name == "modifierExtension"
        if ":" not in url and rule.slices:  # a simple name matching none of the complex extension's slices
            scope.issues.append(
                Issue(
                    "error",
                    "structure",
                    path,
                    f"'{url}' is not a sub-extension this extension defines (or not an absolute URL)",
                    "unknown-extension",
                    scope.profile,
                )
            )
        elif ":" in url:
            scope.issues.append(
                Issue(
                    "error" if modifier else "warning",
                    "extension",
                    path,
                    f"unknown {'modifier ' if modifier else ''}extension {url}: its definition is not loaded",
                    "unknown-extension",
                )
            )
        return TypeRef("Extension")

    def _check_extension_context(self, url: str, rule: ElementRule, path: str, scope: _Scope) -> None:
        """An extension may only be used where its definition's ``context`` allows."""
        plan = self.plans.get(url)
        if plan is None:
            return
        if plan.root.is_modifier != (rule.name == "modifierExtension"):
            kind = "a modifier extension" if plan.root.is_modifier else "not a modifier extension"
            place = "extension" if plan.root.is_modifier else "modifierExtension"
            scope.issues.append(
                Issue(
                    "error",
                    "structure",
                    path,
                    f"{url} is {kind}, so it cannot be used in {place}",
                    "extension-modifier",
                    plan.label,
                )
            )
        if not plan.contexts:
            return
        host = _host_element_path(path, scope)
        key = (url, host, rule.path)
        allowed = self._context_verdicts.get(key)
        if allowed is None:
            allowed = self._context_allows(plan.contexts, host, rule)
            self._context_verdicts[key] = allowed
        if not allowed:
            where = ", ".join(f"{kind} {expression}" for kind, expression in plan.contexts)
            scope.issues.append(
                Issue(
                    "error",
                    "structure",
                    path,
                    f"the extension {url} is not allowed at {host} (its context: {where})",
                    "extension-context",
                    plan.label,
                )
            )

    def _context_allows(self, contexts: list[tuple[str, str]], host: str, rule: ElementRule) -> bool:
        for kind, expression in contexts:
            if kind != "element":
                return True  # fhirpath and extension contexts are not checked: never a false error
            if expression in ("Element", "Base") or expression == host:
                return True
            if "." not in host and expression in ("Resource", "DomainResource"):
                return True
            if self._host_matches(expression, host, rule):
                return True
        return False

    def _host_matches(self, expression: str, host: str, rule: ElementRule) -> bool:
        """``CodeableConcept`` or ``Address.line``: a type, or a path within a type, that the host is."""
        type_name, _, rest = expression.partition(".")
        if rest:
            if not host.endswith("." + rest):
                return False
            prefix = host[: -len(rest) - 1]
            return prefix == type_name or type_name in self._path_types(prefix)
        owner = rule.path.rsplit(".", 1)[0]
        return type_name == owner or type_name in self._path_types(host)

    def _path_types(self, path: str) -> set[str]:
        """The type codes of the element at an element path such as ``Organization.address.line``."""
        segments = path.split(".")
        plan = self.plans.base(segments[0])
        if plan is None:
            return set()
        if len(segments) == 1:
            return {segments[0]}
        rule = plan.root
        for segment in segments[1:]:
            children = rule.children
            if not children:
                type_plan = self._type_plan(rule.types[0]) if rule.types else None
                children = type_plan.root.children if type_plan else {}
            found = children.get(segment)
            if found is None:
                return set()
            rule = found
        return {t.code for t in rule.types}

    # -- primitives ----------------------------------------------------------------------------

    def _validate_primitive(
        self,
        value: Any,
        underscore: Any,
        rule: ElementRule,
        type_ref: TypeRef,
        plan: ProfilePlan,
        path: str,
        scope: _Scope,
        depth: int,
    ) -> None:
        issues = scope.issues
        if underscore is not None:
            if not isinstance(underscore, dict) or not underscore:
                issues.append(
                    Issue(
                        "error",
                        "structure",
                        path,
                        "the primitive's '_' companion must be a non-empty object",
                        "json-primitive",
                    )
                )
            else:
                element_plan, names = self._element_names(type_ref)
                if element_plan is not None:
                    self._walk_children(
                        underscore, element_plan.root, element_plan, path, scope, depth + 1, names=names
                    )
        if value is None:
            if underscore is None:
                issues.append(Issue("error", "structure", path, "null is not allowed here", "json-null"))
            elif not ele1_primitive(value, underscore if isinstance(underscore, dict) else None):
                issues.append(
                    Issue(
                        "error",
                        "invariant",
                        path,
                        "ele-1: the element has neither a value nor extensions",
                        "ele-1",
                    )
                )
            return
        if isinstance(value, str) and value == "":
            issues.append(
                Issue(
                    "error",
                    "value",
                    path,
                    "an empty string is not a value: leave the property out",
                    "json-empty",
                )
            )
            return
        problem = check_primitive(type_ref.code, value)
        if problem:
            issues.append(Issue("error", "value", path, problem, f"type-{type_ref.code}"))
            return
        if rule.max_length is not None and isinstance(value, str) and len(value) > rule.max_length:
            issues.append(
                Issue(
                    "error",
                    "too-long",
                    path,
                    f"value is {len(value)} characters long, more than the maximum {rule.max_length}",
                    "maxLength",
                    scope.profile,
                )
            )
        if rule.fixed_key is not None and value != rule.fixed:
            issues.append(
                Issue(
                    "error",
                    "value",
                    path,
                    f"value is {_short(value)} but must be {_short(rule.fixed)}",
                    "fixed",
                    scope.profile,
                )
            )
        if rule.pattern_key is not None and value != rule.pattern:
            issues.append(
                Issue(
                    "error",
                    "value",
                    path,
                    f"value is {_short(value)} but must be {_short(rule.pattern)}",
                    "pattern",
                    scope.profile,
                )
            )
        if rule.binding_valueset and type_ref.code in ("code", "string", "uri"):
            self._check_binding(value, "code", rule, path, scope)
        if len(rule.constraints) > 1 or (rule.constraints and rule.constraints[0].key != "ele-1"):
            self._check_constraints(value, rule, type_ref, type_ref.code, path, scope, primitive=True)

    def _element_names(
        self, type_ref: TypeRef
    ) -> tuple[ProfilePlan | None, dict[str, tuple[ElementRule, TypeRef]]]:
        """The primitive type's plan and the JSON names allowed in its ``_name`` object (id, extension)."""
        plan = self.plans.base(type_ref.code)
        if plan is None:
            return None, {}
        names = self._underscore_names.get(id(plan))
        if names is None:
            names = {k: v for k, v in plan.root.json_names.items() if k in ("id", "extension")}
            self._underscore_names[id(plan)] = names
        return plan, names

    # -- slicing -------------------------------------------------------------------------------

    def _validate_slices(
        self,
        obj: dict,
        child: ElementRule,
        items: list[tuple[Any, Any, TypeRef, str]],
        plan: ProfilePlan,
        path: str,
        scope: _Scope,
        depth: int,
    ) -> None:
        slicing = child.slicing
        counts = [0] * len(child.slices)
        last_slice = -1
        unmatched_seen = False
        for item, underscore, type_ref, item_path in items:
            index = self._match_slice(item, type_ref, child, scope)
            if index is None:
                unmatched_seen = True
                if slicing is not None and slicing.rules == "closed":
                    scope.issues.append(
                        Issue(
                            "error",
                            "structure",
                            item_path,
                            f"this element does not match any of the slices of {child.path}, and the slicing is closed",
                            "slicing-closed",
                            scope.profile,
                        )
                    )
                self._validate_item(item, underscore, child, type_ref, plan, item_path, scope, depth)
                continue
            slice_rule = child.slices[index]
            counts[index] += 1
            if slicing is not None and slicing.ordered and index < last_slice:
                scope.issues.append(
                    Issue(
                        "error",
                        "structure",
                        item_path,
                        f"slices of {child.path} are out of order ({slice_rule.slice_name})",
                        "slicing-order",
                        scope.profile,
                    )
                )
            if slicing is not None and slicing.rules == "openAtEnd" and unmatched_seen:
                scope.issues.append(
                    Issue(
                        "error",
                        "structure",
                        item_path,
                        f"{child.path} is open at the end: unsliced elements must come after the slices",
                        "slicing-order",
                        scope.profile,
                    )
                )
            last_slice = max(last_slice, index)
            slice_type = type_ref
            if child.choice and slice_rule.types:
                slice_type = next(
                    (t for t in slice_rule.types if t.code == type_ref.code), slice_rule.types[0]
                )
            elif slice_rule.types:
                slice_type = slice_rule.types[0]
            self._validate_item(item, underscore, slice_rule, slice_type, plan, item_path, scope, depth)
        for index, slice_rule in enumerate(child.slices):
            found = counts[index]
            if found < slice_rule.min:
                scope.issues.append(
                    Issue(
                        "error",
                        "required",
                        path,
                        f"slice '{slice_rule.id}': minimum required = {slice_rule.min}, but only found {found}",
                        "slice-cardinality",
                        scope.profile,
                    )
                )
            if slice_rule.max is not None and found > slice_rule.max:
                scope.issues.append(
                    Issue(
                        "error",
                        "structure",
                        path,
                        f"slice '{slice_rule.id}': maximum allowed = {slice_rule.max}, but found {found}",
                        "slice-cardinality",
                        scope.profile,
                    )
                )

    def _match_slice(self, item: Any, type_ref: TypeRef, child: ElementRule, scope: _Scope) -> int | None:
        slicing = child.slicing
        if child.choice:  # type slices of a choice element: valueQuantity, occurrenceDateTime ...
            for index, slice_rule in enumerate(child.slices):
                if any(t.code == type_ref.code for t in slice_rule.types):
                    return index
            return None
        if slicing is None or not slicing.discriminators:
            return None
        for index, slice_rule in enumerate(child.slices):
            if all(
                self._discriminator_matches(item, d.type, d.path, slice_rule, scope)
                for d in slicing.discriminators
            ):
                return index
        return None

    def _discriminator_matches(
        self, item: Any, kind: str, disc_path: str, slice_rule: ElementRule, scope: _Scope
    ) -> bool:
        values = select_path(item, disc_path, lambda ref: self._resolve(ref, scope))
        if kind in ("value", "pattern"):
            expected_rule = self._rule_at(slice_rule, disc_path)
            if expected_rule is None or (
                expected_rule.fixed_key is None and expected_rule.pattern_key is None
            ):
                if (
                    disc_path == "url"
                ):  # an extension slice whose definition is not loaded: its profile is its url
                    urls = [p for t in slice_rule.types for p in t.profiles]
                    return any(v in urls for v in values)
                if expected_rule is not None and expected_rule.binding_strength == "required":
                    valueset = expected_rule.binding_valueset or ""
                    return any(self.terminology.member_of(v, valueset) for v in values)
                return False
            if expected_rule.fixed_key is not None:
                return any(v == expected_rule.fixed for v in values)
            return any(matches_pattern(v, expected_rule.pattern) for v in values)
        if kind == "exists":
            expected_rule = self._rule_at(slice_rule, disc_path)
            must_exist = expected_rule is not None and expected_rule.min > 0
            return bool(values) == must_exist
        if kind == "type":
            expected_rule = self._rule_at(slice_rule, disc_path) or slice_rule
            codes = {t.code for t in expected_rule.types}
            if disc_path.endswith("resolve()"):  # the type of the referenced resource
                codes = {self._target_type(p) for t in expected_rule.types for p in t.target_profiles}
            return any(_value_type(v) in codes for v in values)
        if kind == "profile":
            expected_rule = self._rule_at(slice_rule, disc_path) or slice_rule
            profiles = [p for t in expected_rule.types for p in (t.profiles or t.target_profiles)]
            return any(self._conforms(v, p) for v in values for p in profiles)
        return False

    def _rule_at(self, rule: ElementRule, disc_path: str) -> ElementRule | None:
        """The element rule a discriminator path leads to within a slice (inline or via its type)."""
        key = (id(rule), disc_path)
        if key not in self._rules_at:
            self._rules_at[key] = self._find_rule_at(rule, disc_path)
        return self._rules_at[key]

    def _find_rule_at(self, rule: ElementRule, disc_path: str) -> ElementRule | None:
        if disc_path in ("$this", ""):
            return rule
        current: ElementRule | None = rule
        for segment in disc_path.split("."):
            if current is None:
                return None
            if segment.startswith(("ofType(", "as(")) or segment == "resolve()":
                continue
            if segment.startswith("extension("):
                url = segment[len("extension(") :].strip(")'\"")
                ext = current.children.get("extension")
                current = next(
                    (s for s in (ext.slices if ext else ()) if any(url in t.profiles for t in s.types)), None
                )
                continue
            children = current.children
            if not children and current.types:
                type_plan = self._type_plan(current.types[0])
                children = type_plan.root.children if type_plan else {}
            current = children.get(segment)
        return current

    def _conforms(self, value: Any, profile: str, bundle: dict | None = None) -> bool:
        plan = self.plans.get(profile)
        if plan is None or not isinstance(value, dict):
            return False
        issues: list[Issue] = []
        scope = _Scope(value, value, plan.label, issues, bundle, base_path=plan.type)
        if plan.kind == "resource":
            if value.get("resourceType") != plan.type:
                return False
            self._walk_resource(value, plan, plan.type, scope, 0)
        else:
            self._walk_children(value, plan.root, plan, plan.type, scope, 0)
            self._check_constraints(value, plan.root, None, plan.type, plan.type, scope)
        return not any(i.is_error for i in issues)

    # -- terminology ----------------------------------------------------------------------------

    def _check_binding(self, item: Any, code_type: str, rule: ElementRule, path: str, scope: _Scope) -> None:
        strength = rule.binding_strength
        if strength == "example" or strength is None:
            return
        valueset = rule.binding_valueset or ""
        severity = {"required": "error", "extensible": "warning"}.get(strength, "information")
        if code_type == "code":
            check = self.terminology.validate_code(valueset, None, item)
            self._report_code(check, severity, path, rule, scope)
            return
        if code_type == "Quantity":
            return
        codings = (
            [item] if code_type == "Coding" else [c for c in item.get("coding") or () if isinstance(c, dict)]
        )
        if not codings:
            if code_type == "CodeableConcept" and strength in ("required", "extensible"):
                scope.issues.append(
                    Issue(
                        severity,
                        "code-invalid",
                        path,
                        f"no code provided, and a code {'is required' if strength == 'required' else 'should be provided'} "
                        f"from the value set {valueset}",
                        "binding",
                        scope.profile,
                    )
                )
            return
        checks = []
        for i, coding in enumerate(codings):
            code = coding.get("code")
            if not isinstance(code, str):
                continue
            sub = path if code_type == "Coding" else f"{path}.coding[{i}]"
            checks.append(
                (
                    sub,
                    self.terminology.validate_code(
                        valueset, coding.get("system"), code, coding.get("display")
                    ),
                )
            )
        valid = [c for c in checks if c[1].status == "valid"]
        for sub, check in checks:
            if check.display_ok is False and not self._system_checks_display(codings, sub, path):
                scope.issues.append(
                    Issue(
                        "warning",
                        "value",
                        f"{sub}.display",
                        f"wrong display '{_display(codings, sub, path)}': expected '{check.expected_display}'",
                        "display",
                        scope.profile,
                    )
                )
        if valid:
            return
        if not checks:
            return
        unknown = [c for c in checks if c[1].status == "unknown"]
        if unknown:
            sub, check = unknown[0]
            scope.issues.append(
                Issue(
                    "warning",
                    "not-supported",
                    sub,
                    f"cannot check the code against the value set {valueset}: {check.message}",
                    "binding",
                    scope.profile,
                )
            )
            return
        codes = ", ".join(f"{c.get('system', '')}#{c.get('code', '')}" for c in codings)
        text = (
            f"the code {codes} is not in the value set {valueset}"
            if code_type == "Coding"
            else f"none of the codings provided ({codes}) are in the value set {valueset}"
        )
        scope.issues.append(
            Issue(severity, "code-invalid", path, f"{text} ({strength} binding)", "binding", scope.profile)
        )

    def _system_checks_display(self, codings: list[dict], sub: str, path: str) -> bool:
        """True when the coding's own code system is loaded, so its display is checked there."""
        coding = codings[0] if sub == path else codings[int(sub.rsplit("[", 1)[-1].rstrip("]"))]
        system, code = coding.get("system"), coding.get("code")
        if not isinstance(system, str) or not isinstance(code, str):
            return False
        return self.terminology.validate_coding_in_system(system, code).status != "unknown"

    def _report_code(
        self, check: CodeCheck, severity: str, path: str, rule: ElementRule, scope: _Scope
    ) -> None:
        if check.status == "invalid":
            scope.issues.append(
                Issue(
                    severity,
                    "code-invalid",
                    path,
                    f"{check.message} ({rule.binding_strength} binding)",
                    "binding",
                    scope.profile,
                )
            )
        elif check.status == "unknown":
            scope.issues.append(
                Issue(
                    "warning",
                    "not-supported",
                    path,
                    f"cannot check the code against {rule.binding_valueset}: {check.message}",
                    "binding",
                    scope.profile,
                )
            )

    def _check_coding_system(self, coding: dict, path: str, scope: _Scope) -> None:
        system, code = coding.get("system"), coding.get("code")
        if isinstance(system, str):
            problem = self._system_problem(system)
            if problem:
                scope.issues.append(Issue("error", "invalid", f"{path}.system", problem, "coding-system"))
                return
        if not isinstance(system, str) or not isinstance(code, str):
            return
        version = coding.get("version")
        check = self.terminology.validate_coding_in_system(
            system, code, coding.get("display"), version if isinstance(version, str) else None
        )
        if check.status == "invalid":
            scope.issues.append(Issue("error", "code-invalid", f"{path}.code", check.message, "code-system"))
        elif check.display_ok is False:
            scope.issues.append(
                Issue(
                    "warning",
                    "value",
                    f"{path}.display",
                    f"wrong display '{coding.get('display')}' for {system}#{code}: expected '{check.expected_display}'",
                    "display",
                )
            )

    def _check_attachment(self, attachment: dict, path: str, scope: _Scope) -> None:
        """Attachment.size is the number of bytes of data, Attachment.hash their base64 SHA-1."""
        data = attachment.get("data")
        if not isinstance(data, str):
            return
        try:
            content = base64.b64decode("".join(data.split()), validate=True)
        except (binascii.Error, ValueError):
            return  # reported by the base64Binary check
        size = attachment.get("size")
        if isinstance(size, int) and not isinstance(size, bool) and size != len(content):
            scope.issues.append(
                Issue(
                    "error",
                    "value",
                    path,
                    f"Attachment.size is {size}, but the data holds {len(content)} bytes",
                    "attachment-size",
                )
            )
        digest = attachment.get("hash")
        if isinstance(digest, str) and digest != base64.b64encode(hashlib.sha1(content).digest()).decode():
            scope.issues.append(
                Issue(
                    "error",
                    "value",
                    path,
                    "Attachment.hash is not the base64 SHA-1 of the data",
                    "attachment-hash",
                )
            )

    def _system_problem(self, system: str) -> str | None:
        """Why a Coding.system cannot name a code system (relative, a value set, a supplement)."""
        if system not in self._system_problems:
            problem = None
            entry = self.packages.entry(system)
            if not _is_absolute(system):
                problem = f"Coding.system must be an absolute URI, not '{system}'"
            elif entry is not None and entry.resource_type == "ValueSet":
                problem = f"{system} is a value set, not a code system"
            elif (
                entry is not None
                and entry.resource_type == "CodeSystem"
                and self.packages.read(entry).get("content") == "supplement"
            ):
                problem = f"{system} is a code system supplement, which cannot be used as a system"
            self._system_problems[system] = problem
        return self._system_problems[system]

    # -- identifiers and references -----------------------------------------------------------

    def _check_identifier(self, identifier: dict, path: str, scope: _Scope) -> None:
        system, value = identifier.get("system"), identifier.get("value")
        if isinstance(system, str) and not _is_absolute(system):
            scope.issues.append(
                Issue(
                    "error",
                    "invalid",
                    f"{path}.system",
                    f"Identifier.system must be an absolute URI, not '{system}'",
                    "identifier-system",
                )
            )
        check = IDENTIFIER_CHECKS.get(system) if isinstance(system, str) else None
        if check is None or not isinstance(value, str):
            return
        problem = check(value)
        if problem:
            scope.issues.append(
                Issue(
                    "error" if self.strict_identifiers else "warning",
                    "value",
                    f"{path}.value",
                    problem,
                    _BELGIAN_RULES[system],
                )
            )

    def _check_reference(self, ref: dict, type_ref: TypeRef, path: str, scope: _Scope, depth: int) -> None:
        reference = ref.get("reference")
        declared = ref.get("type")
        allowed = self._allowed_targets(type_ref)
        has_reference = isinstance(reference, str) and bool(reference)
        if (
            not has_reference
            and isinstance(declared, str)
            and allowed
            and "Resource" not in allowed
            and declared not in allowed
        ):
            scope.issues.append(
                Issue(
                    "error",
                    "structure",
                    f"{path}.type",
                    f"the type '{declared}' is not a valid target for this reference (must be one of {', '.join(sorted(allowed))})",
                    "reference-target",
                    scope.profile,
                )
            )
        if not isinstance(reference, str) or not reference:
            return
        target_type: str | None = None
        target: dict | None = None
        if reference.startswith("#"):
            target = self._resolve(reference, scope)
            if target is None:
                scope.issues.append(
                    Issue(
                        "error",
                        "not-found",
                        path,
                        f"reference {reference} does not point to a contained resource",
                        "reference",
                    )
                )
                return
            target_type = target.get("resourceType")
        elif reference.startswith("urn:"):
            if not _URN_REF.match(reference):
                scope.issues.append(
                    Issue(
                        "error",
                        "value",
                        path,
                        f"'{reference}' is not a valid urn:uuid or urn:oid",
                        "reference",
                    )
                )
                return
            target = self._resolve(reference, scope)
            if target is None and scope.bundle is not None:
                return  # bundle_issues reports references that are not in the Bundle
            target_type = target.get("resourceType") if target else None
        elif match := _RELATIVE_REF.match(reference) or _ABSOLUTE_REF.match(reference):
            target = self._resolve(reference, scope)
            target_type = match.group(1) or (target.get("resourceType") if target else None)
        else:
            scope.issues.append(
                Issue(
                    "error",
                    "value",
                    path,
                    f"'{reference}' is not a valid reference (relative Type/id, absolute URL, #id or urn:uuid:)",
                    "reference",
                )
            )
            return
        if isinstance(declared, str) and target_type and declared != target_type:
            scope.issues.append(
                Issue(
                    "error",
                    "value",
                    f"{path}.type",
                    f"type '{declared}' does not match the reference's type '{target_type}'",
                    "reference",
                )
            )
        if target_type and allowed and "Resource" not in allowed and target_type not in allowed:
            scope.issues.append(
                Issue(
                    "error",
                    "structure",
                    path,
                    f"the type '{target_type}' is not a valid target for this reference (must be one of {', '.join(sorted(allowed))})",
                    "reference-target",
                    scope.profile,
                )
            )
            return
        if target is not None and id(target) not in scope.visiting and target is not scope.resource:
            self._check_target_profiles(target, type_ref, path, scope)

    def _check_target_profiles(self, target: dict, type_ref: TypeRef, path: str, scope: _Scope) -> None:
        """A contained target must conform to one of the target profiles of its type."""
        rtype = target.get("resourceType")
        profiles = [
            p for p in type_ref.target_profiles if not p.startswith(CORE) and self._target_type(p) == rtype
        ]
        if not profiles:
            return
        scope.visiting.add(id(target))
        try:
            if not any(self._conforms(target, p, scope.bundle) for p in profiles):
                scope.issues.append(
                    Issue(
                        "error",
                        "structure",
                        path,
                        f"the contained {rtype} does not conform to {' or '.join(profiles)}",
                        "reference-target-profile",
                        scope.profile,
                    )
                )
        finally:
            scope.visiting.discard(id(target))

    def _allowed_targets(self, type_ref: TypeRef) -> set[str]:
        return {t for t in (self._target_type(p) for p in type_ref.target_profiles) if t}

    def _target_type(self, profile: str) -> str | None:
        if profile not in self._target_types:
            plan = self.plans.get(profile)
            self._target_types[profile] = plan.type if plan else None
        return self._target_types[profile]

    def _resolve(self, reference: str, scope: _Scope) -> dict | None:
        """Find what a reference points to: a contained resource, or a Bundle entry."""
        if reference.startswith("#"):
            if reference == "#":
                return scope.root  # the container (a resource that is not contained is its own root)
            wanted = reference[1:]
            for container in (scope.root, scope.resource):
                for contained in container.get("contained") or ():
                    if isinstance(contained, dict) and contained.get("id") == wanted:
                        return contained
            return None
        if scope.bundle is not None:
            index = self._bundle_index(scope.bundle)
            matches = index.resolve(reference, index.full_url_of(scope.root))
            if matches:
                return matches[0] if len(matches) == 1 else None  # ambiguous: bundle_issues reports it
        return self._known.get(reference.split("/_history/", 1)[0])

    def _bundle_index(self, bundle: dict) -> BundleIndex:
        index = self._bundle_indexes.get(id(bundle))
        if index is None or index.bundle is not bundle:
            index = self._bundle_indexes[id(bundle)] = BundleIndex(bundle)
        return index

    def _resolve_for_fhirpath(self, reference: str, ctx: EvalContext) -> dict | None:
        scope = _Scope(ctx.resource, ctx.root_resource, "", [])
        if ctx.root_resource.get("resourceType") == "Bundle":
            scope.bundle = ctx.root_resource
        target = self._resolve(reference, scope)
        if target is None:
            self._unresolved.append(reference)
        return target

    # -- invariants -----------------------------------------------------------------------------

    def _constraints_for(
        self, rule: ElementRule, type_ref: TypeRef | None
    ) -> list[tuple[Constraint, _Evaluator | None, str | None]]:
        key = (id(rule), type_ref.code if type_ref else "")
        compiled = self._constraints.get(key)
        if compiled is not None:
            return compiled
        constraints = list(rule.constraints)
        if type_ref is not None and not type_ref.is_primitive:
            type_plan = self._type_plan(type_ref)
            if type_plan is not None:
                constraints.extend(type_plan.root.constraints)
        compiled = []
        seen: set[str] = set()
        for constraint in constraints:
            if constraint.key in seen:
                continue
            seen.add(constraint.key)
            native = NATIVE.get((constraint.key, constraint.expression))
            if native is not None:
                compiled.append((constraint, native, None))
                continue
            try:
                expression = self.fhirpath.compile(constraint.expression)
                compiled.append((constraint, _holds(expression.evaluate), None))
            except FhirPathError as exc:
                compiled.append((constraint, None, str(exc)))
        self._constraints[key] = compiled
        return compiled

    def _check_constraints(
        self,
        node: Any,
        rule: ElementRule,
        type_ref: TypeRef | None,
        node_type: str,
        path: str,
        scope: _Scope,
        primitive: bool = False,
    ) -> None:
        context: EvalContext | None = None
        for constraint, evaluate, problem in self._constraints_for(rule, type_ref):
            if primitive and constraint.key == "ele-1":
                continue  # checked natively with the primitive's '_' companion
            if evaluate is None:
                scope.issues.append(
                    Issue(
                        "warning",
                        "not-supported",
                        path,
                        f"constraint {constraint.key} could not be evaluated: {problem}",
                        constraint.key,
                        constraint.source,
                    )
                )
                continue
            if context is None:
                context = EvalContext(scope.resource, scope.root, node_type)
            self._unresolved.clear()
            try:
                ok = evaluate(node, context)
            except Exception as exc:  # an interpreter failure must not pass silently
                scope.issues.append(
                    Issue(
                        "warning",
                        "not-supported",
                        path,
                        f"constraint {constraint.key} could not be evaluated: {exc}",
                        constraint.key,
                        constraint.source,
                    )
                )
                continue
            if not ok and self._unresolved:
                scope.issues.append(
                    Issue(
                        "warning",
                        "not-supported",
                        path,
                        f"constraint {constraint.key} could not be checked: it needs "
                        f"{', '.join(sorted(set(self._unresolved)))}, which could not be resolved",
                        constraint.key,
                        constraint.source or scope.profile,
                    )
                )
            elif not ok:
                severity = self.best_practice if constraint.best_practice else constraint.severity
                if severity == "ignore":
                    continue
                human = f": '{constraint.human}'" if constraint.human else ""
                scope.issues.append(
                    Issue(
                        severity if severity in ("error", "warning", "information") else "error",
                        "invariant",
                        path,
                        f"constraint failed: {constraint.key}{human}",
                        constraint.key,
                        constraint.source or scope.profile,
                    )
                )


# -- helpers ------------------------------------------------------------------------------------


def _holds(evaluate: Callable[[Any, EvalContext], list]) -> _Evaluator:
    """An invariant is violated when its expression yields false.

    FHIRPath propagates empty collections, so an invariant over absent content (ref-1 on a
    Reference without ``reference``) yields empty: nothing to assert, so not a violation. The HL7
    validator reaches the same verdicts (its string functions answer false rather than empty).
    """

    def holds(node: Any, context: EvalContext) -> bool:
        return evaluate(node, context) != [False]

    return holds


def _label(resource: Any) -> str:
    if isinstance(resource, dict):
        rtype = resource.get("resourceType", "?")
        rid = resource.get("id")
        return f"{rtype}/{rid}" if isinstance(rid, str) else str(rtype)
    return "(not an object)"


_INDEX_OR_TYPE = re.compile(r"\[\d+\]|\.ofType\([^)]*\)")


def _is_absolute(uri: str) -> bool:
    """An absolute URI has a scheme (``http:``, ``urn:``, ``https:`` ...)."""
    scheme, colon, _ = uri.partition(":")
    return bool(colon) and scheme[:1].isalpha() and all(c.isalnum() or c in "+.-" for c in scheme)


def _host_element_path(path: str, scope: _Scope) -> str:
    """The element path (no indices) of the element holding the extension at ``path``."""
    relative = _INDEX_OR_TYPE.sub("", path[len(scope.base_path) :])
    element = str(scope.resource.get("resourceType", "")) + relative
    return element.rsplit(".", 1)[0]


def _node_type(rule: ElementRule, type_ref: TypeRef) -> str:
    if type_ref.code in ("BackboneElement", "Element") and rule.path.count("."):
        return rule.path
    return type_ref.code


def _short(value: Any) -> str:
    text = orjson.dumps(value).decode()
    return text if len(text) <= 200 else text[:197] + "..."


def _display(codings: list[dict], sub: str, path: str) -> str:
    if sub == path:
        return str(codings[0].get("display"))
    index = int(sub.rsplit("[", 1)[-1].rstrip("]"))
    return str(codings[index].get("display"))


def _value_type(value: Any) -> str:
    if isinstance(value, dict):
        rtype = value.get("resourceType")
        return rtype if isinstance(rtype, str) else ""
    return ""


def matches_pattern(value: Any, pattern: Any) -> bool:
    """FHIR pattern[x] semantics: every value in the pattern is present in the instance."""
    if isinstance(pattern, dict):
        if not isinstance(value, dict):
            return False
        return all(key in value and matches_pattern(value[key], sub) for key, sub in pattern.items())
    if isinstance(pattern, list):
        values = value if isinstance(value, list) else [value]
        return all(any(matches_pattern(v, p) for v in values) for p in pattern)
    return value == pattern


def select_path(item: Any, path: str, resolve: Callable[[str], dict | None]) -> list[Any]:
    """Evaluate a slicing discriminator path (a restricted FHIRPath) on one element."""
    current = [item]
    if path in ("$this", ""):
        return current
    for segment in _split_path(path):
        following: list[Any] = []
        if segment == "$this":
            continue
        if segment == "resolve()":
            for value in current:
                ref = value.get("reference") if isinstance(value, dict) else None
                target = resolve(ref) if isinstance(ref, str) else None
                if target is not None:
                    following.append(target)
        elif segment.startswith("extension("):
            url = segment[len("extension(") : -1].strip("'\"")
            for value in current:
                if isinstance(value, dict):
                    following.extend(
                        e for e in value.get("extension") or () if isinstance(e, dict) and e.get("url") == url
                    )
        elif segment.startswith(("ofType(", "as(")):
            wanted = segment[segment.index("(") + 1 : -1]
            following = [v for v in current if _value_type(v) in ("", wanted)]
        else:
            for value in current:
                if not isinstance(value, dict):
                    continue
                found = value.get(segment)
                if found is None:
                    found = next(
                        (
                            v
                            for k, v in value.items()
                            if k.startswith(segment) and k[len(segment) : len(segment) + 1].isupper()
                        ),
                        None,
                    )
                if isinstance(found, list):
                    following.extend(found)
                elif found is not None:
                    following.append(found)
        current = following
    return current


def _split_path(path: str) -> Iterable[str]:
    depth = 0
    start = 0
    for i, char in enumerate(path):
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        elif char == "." and depth == 0:
            yield path[start:i]
            start = i + 1
    yield path[start:]
