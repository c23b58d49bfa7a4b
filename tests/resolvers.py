"""A resolver for FHIRPath tests: the references a resource can settle by itself."""

from __future__ import annotations

from conformance.fhir.fhirpath import EvalContext


def local_resolver(reference: str, ctx: EvalContext) -> dict | None:
    """A resolver for the references a resource can settle by itself: ``#id`` (contained), ``#``
    (the container) and, inside a Bundle, ``fullUrl`` or ``Type/id`` of an entry."""
    if reference.startswith("#"):
        container = _container_of(ctx)
        if reference == "#":
            return container
        wanted = reference[1:]
        for candidate in container.get("contained") or ():
            if isinstance(candidate, dict) and candidate.get("id") == wanted:
                return candidate
        return None
    root = ctx.root_resource
    if root.get("resourceType") != "Bundle":
        return None
    relative = reference.split("/_history/")[0]
    for entry in root.get("entry") or ():
        if not isinstance(entry, dict):
            continue
        resource = entry.get("resource")
        if not isinstance(resource, dict):
            continue
        if (
            entry.get("fullUrl") == reference
            or f"{resource.get('resourceType')}/{resource.get('id')}" == relative
        ):
            return resource
    return None


def _container_of(ctx: EvalContext) -> dict:
    """The resource whose ``contained`` holds ``ctx.resource``, or ``ctx.resource`` itself."""
    resource = ctx.resource
    candidates = [ctx.root_resource]
    if ctx.root_resource.get("resourceType") == "Bundle":
        candidates.extend(
            e["resource"]
            for e in ctx.root_resource.get("entry") or ()
            if isinstance(e, dict) and isinstance(e.get("resource"), dict)
        )
    for candidate in candidates:
        if candidate is resource:
            continue
        if any(c is resource for c in candidate.get("contained") or ()):
            return candidate
    return resource
