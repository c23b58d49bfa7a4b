"""Bundle rules the structure walk cannot see, reference resolution inside Bundles, and ``Element.id`` uniqueness.

Pure functions over parsed JSON (no definitions, no validator): the validator calls them once per
Bundle (``bundle_issues``), once per resource (``duplicate_id_issues``) and per reference
(``BundleIndex.resolve`` / ``resolve_in_bundle``). What the Bundle invariants already say (bdl-1 to
bdl-12, evaluated as FHIRPath elsewhere) is not said again here: duplicate fullUrls (bdl-7),
version-specific fullUrls (bdl-8), a document's first entry (bdl-11) and a message's (bdl-12).

References are resolved as R4 bundle.html#references says: an absolute reference (URL, ``urn:uuid:``,
``urn:oid:``) matches an entry's fullUrl; a relative ``Type/id`` is made absolute against the base
of the referring entry's fullUrl, and only when that fullUrl is a RESTful ``[base]/Type/id`` URL;
a version-specific reference (``/_history/n``) matches the fullUrl without the version and then
``meta.versionId``. Locations are FHIRPath with indices, as the HL7 validator writes them
(``Bundle.entry[2].resource.subject``, ``Patient.extension[0].value.ofType(Reference)``).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from urllib.parse import unquote

from conformance.fhir.outcome import Issue

__all__ = [
    "RESOURCE_TYPES",
    "BundleIndex",
    "bundle_issues",
    "duplicate_id_issues",
    "resolve_in_bundle",
]


def _names(text: str) -> frozenset[str]:
    return frozenset(text.split())


#: The concrete resource types of FHIR R4 (hl7.fhir.r4.core 4.0.1).
RESOURCE_TYPES = _names(
    """
    Account ActivityDefinition AdverseEvent AllergyIntolerance Appointment AppointmentResponse
    AuditEvent Basic Binary BiologicallyDerivedProduct BodyStructure Bundle CapabilityStatement CarePlan
    CareTeam CatalogEntry ChargeItem ChargeItemDefinition Claim ClaimResponse ClinicalImpression
    CodeSystem Communication CommunicationRequest CompartmentDefinition Composition ConceptMap Condition
    Consent Contract Coverage CoverageEligibilityRequest CoverageEligibilityResponse DetectedIssue
    Device DeviceDefinition DeviceMetric DeviceRequest DeviceUseStatement DiagnosticReport
    DocumentManifest DocumentReference EffectEvidenceSynthesis Encounter Endpoint EnrollmentRequest
    EnrollmentResponse EpisodeOfCare EventDefinition Evidence EvidenceVariable ExampleScenario
    ExplanationOfBenefit FamilyMemberHistory Flag Goal GraphDefinition Group GuidanceResponse
    HealthcareService ImagingStudy Immunization ImmunizationEvaluation ImmunizationRecommendation
    ImplementationGuide InsurancePlan Invoice Library Linkage List Location Measure MeasureReport Media
    Medication MedicationAdministration MedicationDispense MedicationKnowledge MedicationRequest
    MedicationStatement MedicinalProduct MedicinalProductAuthorization MedicinalProductContraindication
    MedicinalProductIndication MedicinalProductIngredient MedicinalProductInteraction
    MedicinalProductManufactured MedicinalProductPackaged MedicinalProductPharmaceutical
    MedicinalProductUndesirableEffect MessageDefinition MessageHeader MolecularSequence NamingSystem
    NutritionOrder Observation ObservationDefinition OperationDefinition OperationOutcome Organization
    OrganizationAffiliation Parameters Patient PaymentNotice PaymentReconciliation Person PlanDefinition
    Practitioner PractitionerRole Procedure Provenance Questionnaire QuestionnaireResponse RelatedPerson
    RequestGroup ResearchDefinition ResearchElementDefinition ResearchStudy ResearchSubject
    RiskAssessment RiskEvidenceSynthesis Schedule SearchParameter ServiceRequest Slot Specimen
    SpecimenDefinition StructureDefinition StructureMap Subscription Substance SubstanceNucleicAcid
    SubstancePolymer SubstanceProtein SubstanceReferenceInformation SubstanceSourceMaterial
    SubstanceSpecification SupplyDelivery SupplyRequest Task TerminologyCapabilities TestReport
    TestScript ValueSet VerificationResult VisionPrescription
    """
)

# Choice elements (``value[x]`` ...) of R4, for HL7-style locations (``value.ofType(Quantity)``):
# the element names, and the JSON type suffixes with the type code each stands for.
_CHOICE_BASES = _names(
    """
    abatement additive age allowed amount answer asNeeded author born bounds characteristic chargeItem
    code collected content created date deceased defaultValue definingSubstance definition detail
    diagnosis dose doseNumber due effective entity event example fastingStatus fixed identified
    indication item legallyBinding location manufacturer maxValue medication minValue minimumVolume
    module multipleBirth name occurred occurrence offset onset participantEffective pattern performed
    probability procedure product quantity rate reported scheduled seriesDoses serviced source start
    statusReason studyEffective subject substance target time timing topic used value when
    """
)
_COMPLEX_CHOICE_TYPES = _names(
    """
    Address Age Annotation Attachment CodeableConcept Coding ContactDetail ContactPoint Contributor
    Count DataRequirement Distance Dosage Duration Expression HumanName Identifier Meta Money
    ParameterDefinition Period Quantity Range Ratio Reference RelatedArtifact SampledData Signature
    Timing TriggerDefinition UsageContext
    """
)
_PRIMITIVE_CHOICE_TYPES = _names(
    """
    base64Binary boolean canonical code date dateTime decimal id instant integer markdown oid
    positiveInt string time unsignedInt uri url uuid
    """
)
_CHOICE_SUFFIXES = {
    **{name: name for name in _COMPLEX_CHOICE_TYPES},
    **{name[0].upper() + name[1:]: name for name in _PRIMITIVE_CHOICE_TYPES},
}
# Element names that read like a choice (base + type) but are plain elements of these resources
# (None: of a data type, so plain wherever they occur).
_PLAIN_KEYS: dict[str, frozenset[str] | None] = {
    "sourceId": frozenset({"OperationDefinition", "TestScript"}),
    "targetId": frozenset({"TestScript"}),
    "dateTime": frozenset({"Consent", "NutritionOrder"}),
    "effectiveTime": frozenset({"Contract"}),
    "doseQuantity": frozenset({"Immunization"}),
    "procedureReference": frozenset({"ImagingStudy"}),
    "procedureCode": frozenset({"ImagingStudy"}),
    "effectivePeriod": _names(
        """
        ActivityDefinition ChargeItemDefinition EffectEvidenceSynthesis EventDefinition Evidence
        EvidenceVariable Library Measure PlanDefinition Questionnaire ResearchDefinition
        ResearchElementDefinition RiskEvidenceSynthesis
        """
    ),
    "contentReference": frozenset({"StructureDefinition"}),  # ElementDefinition.contentReference
    "occurrenceDateTime": frozenset({"GuidanceResponse"}),
    "effectiveDate": frozenset({"MedicinalProduct"}),
    "dateRange": None,  # MarketingStatus.dateRange
    "itemCodeableConcept": frozenset({"ClinicalImpression"}),
    "itemReference": frozenset({"ClinicalImpression"}),
    "valueQuantity": frozenset({"Device", "DeviceDefinition"}),
    "valueCode": frozenset({"Device", "DeviceDefinition"}),
    "usedReference": frozenset({"Procedure"}),
    "usedCode": frozenset({"Procedure"}),
    "sourceSignature": frozenset({"VerificationResult"}),
    "locationCode": frozenset({"ServiceRequest"}),
    "locationReference": frozenset({"ServiceRequest"}),
    "definitionUri": frozenset({"ChargeItem"}),
    "definitionCanonical": frozenset({"ChargeItem"}),
    "productCode": frozenset({"BiologicallyDerivedProduct"}),
}

_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*:").match
_ID = r"[A-Za-z0-9\-.]{1,64}"
# references.html#regex, with a laxer base (any path segments) so real server bases qualify.
_RESTFUL = re.compile(
    rf"(?P<base>https?://[^?#\s]*?/)(?P<type>[A-Z][A-Za-z]+)/(?P<id>{_ID})(?:/_history/(?P<version>{_ID}))?"
).fullmatch
_RELATIVE = re.compile(rf"(?P<type>[A-Z][A-Za-z]+)/(?P<id>{_ID})(?:/_history/(?P<version>{_ID}))?").fullmatch
_TRANSACTIONS = frozenset({"transaction", "batch"})
_RESPONSES = frozenset({"transaction-response", "batch-response"})


# -- resolution ------------------------------------------------------------------------------------


class BundleIndex:
    """A Bundle's entries by fullUrl, built once, for resolving many references.

    ``resolve`` gives every match (two or more is an ambiguous reference); ``full_url_of`` gives the
    fullUrl of the entry holding a resource (the base relative references are resolved against).
    """

    __slots__ = ("_by_type_id", "_by_url", "_full_urls", "bundle", "entries")

    def __init__(self, bundle: dict) -> None:
        self.bundle = bundle
        #: (entry index, entry, resource or None, fullUrl or None), for the entries that are objects
        self.entries: list[tuple[int, dict, dict | None, str | None]] = []
        self._by_url: dict[str, list[int]] = {}
        self._by_type_id: dict[str, list[int]] = {}
        self._full_urls: dict[int, str] = {}
        raw = bundle.get("entry")
        for index, entry in enumerate(raw if isinstance(raw, list) else ()):
            if not isinstance(entry, dict):
                continue
            resource = entry.get("resource")
            resource = resource if isinstance(resource, dict) else None
            full_url = entry.get("fullUrl")
            full_url = full_url if isinstance(full_url, str) and full_url else None
            position = len(self.entries)
            self.entries.append((index, entry, resource, full_url))
            if resource is None:
                continue
            if full_url is not None:
                self._by_url.setdefault(full_url, []).append(position)
                self._full_urls[id(resource)] = full_url
            rtype, rid = resource.get("resourceType"), resource.get("id")
            if isinstance(rtype, str) and isinstance(rid, str):
                self._by_type_id.setdefault(f"{rtype}/{rid}", []).append(position)

    def full_url_of(self, resource: dict) -> str | None:
        """The fullUrl of the entry whose resource is ``resource`` (the same object), if any."""
        return self._full_urls.get(id(resource))

    def resolve(self, reference: str, from_full_url: str | None = None) -> list[dict]:
        """The resources ``reference`` points to, made in the entry with fullUrl ``from_full_url``."""
        return [r for p in self._positions(reference, from_full_url) if (r := self.entries[p][2]) is not None]

    def resolve_indices(self, reference: str, from_full_url: str | None = None) -> list[int]:
        """Like ``resolve``, as indices into ``Bundle.entry``."""
        return [self.entries[p][0] for p in self._positions(reference, from_full_url)]

    def _positions(self, reference: str, from_full_url: str | None) -> list[int]:
        url, version = _absolute(reference, from_full_url)
        if url is None:
            return []
        found = self._by_url.get(url, ())
        if version is not None:
            return [p for p in found if _version_of(self.entries[p][2]) == version]
        return list(found)

    def miss_hint(self, reference: str, from_full_url: str | None = None) -> str:
        """For a reference that resolves to nothing, the near misses: " (...)", or ''."""
        url, version = _absolute(reference, from_full_url)
        relative = _RELATIVE(reference.partition("#")[0])
        hints = []
        if relative is not None:
            if from_full_url is None or _RESTFUL(from_full_url) is None:
                hints.append(
                    "a relative reference resolves only against an entry whose fullUrl is a RESTful "
                    f"[base]/Type/id URL, and this entry's fullUrl is {_quote(from_full_url)}"
                )
            elif url not in self._by_url:
                hints.append(f"no entry has the fullUrl '{url}'")
            for p in self._by_type_id.get(f"{relative['type']}/{relative['id']}", ()):
                if self.entries[p][3] != url:
                    hints.append(
                        f"entry[{self.entries[p][0]}] is {relative['type']}/{relative['id']} "
                        f"but its fullUrl is {_quote(self.entries[p][3])}"
                    )
                    break
        if version is not None and url is not None:
            for p in self._by_url.get(url, ()):
                hints.append(
                    f"entry[{self.entries[p][0]}] has the fullUrl '{url}' "
                    f"but meta.versionId {_quote(_version_of(self.entries[p][2]))}, not '{version}'"
                )
                break
        return f" ({'; '.join(hints)})" if hints else ""


def resolve_in_bundle(bundle: dict, reference: str, from_full_url: str | None) -> list[dict]:
    """Every resource of ``bundle`` that ``reference``, made in the entry with ``from_full_url``, points to.

    One match is a resolution; none means not in the Bundle; two or more is ambiguous
    (bundle.html#references). For many references in one Bundle, build a ``BundleIndex`` once.
    """
    return BundleIndex(bundle).resolve(reference, from_full_url)


def _absolute(reference: str, from_full_url: str | None) -> tuple[str | None, str | None]:
    """The fullUrl a reference must match and the version it asks for (bundle.html#references)."""
    reference = reference.partition("#")[0]
    if not reference:
        return None, None
    if _SCHEME(reference):
        head, sep, version = reference.rpartition("/_history/")
        if sep and head and "/" not in version:
            return head, version
        return reference, None
    relative = _RELATIVE(reference)
    if relative is None or relative["type"] not in RESOURCE_TYPES or from_full_url is None:
        return None, None
    restful = _RESTFUL(from_full_url)
    if restful is None or restful["type"] not in RESOURCE_TYPES:
        return None, None
    return f"{restful['base']}{relative['type']}/{relative['id']}", relative["version"]


def _version_of(resource: dict | None) -> str | None:
    meta = resource.get("meta") if resource else None
    version = meta.get("versionId") if isinstance(meta, dict) else None
    return version if isinstance(version, str) else None


def _quote(value: str | None) -> str:
    return "absent" if value is None else f"'{value}'"


# -- Bundle rules -------------------------------------------------------------------------------------


def bundle_issues(bundle: dict, path: str = "Bundle") -> list[Issue]:
    """The Bundle rules the structure walk and the bdl invariants cannot see.

    fullUrl form and agreement with the resource id, references resolved inside the Bundle
    (not found where they must be, ambiguous), a document's or message's entries not reachable
    from its first resource, and the searchset rules (self link, search.mode, match types, outcome).
    """
    if not isinstance(bundle, dict):
        return []
    btype = bundle.get("type")
    btype = btype if isinstance(btype, str) else ""
    index = BundleIndex(bundle)
    issues: list[Issue] = []
    _full_url_issues(index, btype, path, issues)
    links = _reference_issues(index, btype, path, issues)
    if btype in ("document", "message"):
        _reachability_issues(index, btype, links, path, issues)
    elif btype == "searchset":
        _searchset_issues(bundle, index, path, issues)
    return issues


def _full_url_issues(index: BundleIndex, btype: str, path: str, issues: list[Issue]) -> None:
    """Bundle.entry.fullUrl: present, absolute, consistent with Resource.id when RESTful."""
    for i, entry, resource, full_url in index.entries:
        where = f"{path}.entry[{i}]"
        raw = entry.get("fullUrl")
        if raw is not None and not isinstance(raw, str):
            continue  # not a string: the structure walk reports it
        if full_url is None:
            if resource is not None and not _full_url_optional(entry, resource, btype):
                issues.append(
                    Issue(
                        "error",
                        "invalid",
                        where,
                        "the entry has no fullUrl: except for a POST in a transaction or batch, "
                        "an entry with a resource must have a fullUrl, the identity of the resource",
                        "bundle-fullurl",
                    )
                )
            continue
        if not _SCHEME(full_url):
            issues.append(
                Issue(
                    "error",
                    "invalid",
                    where,
                    f"the fullUrl '{full_url}' must be an absolute URI (a URL, urn:uuid: or urn:oid:)",
                    "bundle-fullurl",
                )
            )
            continue
        restful = _RESTFUL(full_url)
        if resource is None or restful is None or restful["version"] is not None:
            continue  # a version-specific fullUrl is bdl-8's to report
        if restful["type"] not in RESOURCE_TYPES:
            continue
        rtype, rid = resource.get("resourceType"), resource.get("id")
        if not isinstance(rid, str) or not rid:
            issues.append(
                Issue(
                    "error",
                    "invalid",
                    where,
                    f"the fullUrl '{full_url}' looks like a RESTful server URL, but the resource has no id",
                    "bundle-fullurl",
                )
            )
        elif restful["type"] != rtype or restful["id"] != rid:
            issues.append(
                Issue(
                    "error",
                    "invalid",
                    where,
                    f"the fullUrl '{full_url}' looks like a RESTful server URL, so it must end with "
                    f"the resource's type and id (/{rtype}/{rid})",
                    "bundle-fullurl",
                )
            )


def _full_url_optional(entry: dict, resource: dict, btype: str) -> bool:
    if btype in _TRANSACTIONS:
        request = entry.get("request")
        return isinstance(request, dict) and request.get("method") == "POST"
    if btype in _RESPONSES:
        return True  # results of operations: resources that might not be identified
    if btype == "searchset" and resource.get("resourceType") == "OperationOutcome":
        return _search_mode(entry) == "outcome"  # information about the search, not an identified resource
    return False


def _reference_issues(index: BundleIndex, btype: str, path: str, issues: list[Issue]) -> dict[int, set[int]]:
    """Check the literal references of every entry; return the entry-to-entry links they make."""
    links: dict[int, set[int]] = {}
    for i, _entry, resource, full_url in index.entries:
        if resource is None:
            continue
        where = f"{path}.entry[{i}].resource"
        focus = _focus_ids(resource) if btype == "message" and i == 0 else ()
        targets = links.setdefault(i, set())
        for ref, ref_path in _references(resource, where):
            reference = ref["reference"]
            if reference.startswith("#") or "?" in reference:
                continue  # contained (the resource's own business), or conditional (transactions)
            found = index.resolve_indices(reference, full_url)
            targets.update(found)
            if len(found) > 1:
                if btype != "history":  # the same fullUrl recurs there, one entry per version
                    listed = ", ".join(f"entry[{k}]" for k in found)
                    issues.append(
                        Issue(
                            "error",
                            "invalid",
                            ref_path,
                            f"reference '{reference}' matches {len(found)} entries of the bundle ({listed})",
                            "bundle-reference",
                        )
                    )
            elif not found:
                why = _must_resolve(btype, reference, id(ref) in focus)
                if why:
                    issues.append(
                        Issue(
                            "error",
                            "not-found",
                            ref_path,
                            f"reference '{reference}' is not found in the bundle: {why}"
                            f"{index.miss_hint(reference, full_url)}",
                            "bundle-reference",
                        )
                    )
    return links


def _must_resolve(btype: str, reference: str, in_focus: bool) -> str:
    """Why this reference has to resolve inside the Bundle ('' when it may live on a server)."""
    if reference.startswith("urn:"):
        return "a urn: reference can only point to an entry of the bundle"
    if btype == "document":
        return "a document must contain every resource it references"
    if in_focus:
        return "a message must contain the focus of its MessageHeader"
    return ""


def _focus_ids(header: dict) -> set[int]:
    if header.get("resourceType") != "MessageHeader":
        return set()
    focus = header.get("focus")
    return {id(ref) for ref in focus if isinstance(ref, dict)} if isinstance(focus, list) else set()


def _reachability_issues(
    index: BundleIndex, btype: str, links: dict[int, set[int]], path: str, issues: list[Issue]
) -> None:
    """Document and message entries reachable from the first resource (or allowed beside it)."""
    if not index.entries or index.entries[0][0] != 0:
        return
    first = index.entries[0][2]
    expected = "Composition" if btype == "document" else "MessageHeader"
    if first is None or first.get("resourceType") != expected:
        return  # bdl-11 / bdl-12
    reached: set[int] = set()
    _visit(0, links, reached)
    if btype == "document":
        for link in _list(index.bundle.get("link")):
            if isinstance(link, dict) and link.get("relation") == "stylesheet":
                for k in _link_targets(index, link.get("url")):
                    _visit(k, links, reached)
    changed = True
    while changed:  # entries that point into what is reached: Provenance (documents), any (messages)
        changed = False
        for i, _entry, resource, full_url in index.entries:
            if resource is None or i in reached:
                continue
            if btype == "document":
                if resource.get("resourceType") != "Provenance":
                    continue
                pointed = _provenance_targets(index, resource, full_url)
            else:
                pointed = links.get(i, set())
            if pointed & reached:
                _visit(i, links, reached)
                changed = True
    rule = f"bundle-{btype}"
    for i, _entry, resource, full_url in index.entries:
        if resource is None or i in reached:
            continue
        if btype == "document":
            text = (
                "is not referenced from the Composition, directly or indirectly: a document contains "
                "only the Composition, what it references, a stylesheet and the Provenance of its content"
            )
        else:
            text = "is not referenced from the MessageHeader, directly or indirectly"
        named = f"the entry {_quote(full_url)}" if full_url else "the entry"
        issues.append(Issue("warning", "informational", f"{path}.entry[{i}]", f"{named} {text}", rule))


def _visit(start: int, links: dict[int, set[int]], reached: set[int]) -> None:
    todo = [start]
    while todo:
        i = todo.pop()
        if i not in reached:
            reached.add(i)
            todo.extend(links.get(i, ()))


def _link_targets(index: BundleIndex, url: object) -> list[int]:
    if not isinstance(url, str) or not url:
        return []
    found = index.resolve_indices(url, None)
    if found:
        return found
    return [
        i
        for i, _entry, resource, _full_url in index.entries
        if resource is not None and f"{resource.get('resourceType')}/{resource.get('id')}" == url
    ]


def _provenance_targets(index: BundleIndex, provenance: dict, full_url: str | None) -> set[int]:
    targets: set[int] = set()
    for target in _list(provenance.get("target")):
        if isinstance(target, dict) and isinstance(target.get("reference"), str):
            targets.update(index.resolve_indices(target["reference"], full_url))
    return targets


def _searchset_issues(bundle: dict, index: BundleIndex, path: str, issues: list[Issue]) -> None:
    """bundle.html#searchset: the self link, search.mode, what a match or an outcome may be."""
    self_url = next(
        (
            link.get("url")
            for link in _list(bundle.get("link"))
            if isinstance(link, dict) and link.get("relation") == "self"
        ),
        None,
    )
    types: list[str] = []
    if not isinstance(self_url, str) or not self_url:
        issues.append(
            Issue(
                "warning",
                "invalid",
                path,
                "a search result should have a 'self' link: the search that was performed",
                "bundle-searchset",
            )
        )
    else:
        types = _search_types(self_url)
    modes = [_search_mode(entry) for _, entry, _, _ in index.entries]
    if index.entries and not any(modes):
        issues.append(
            Issue(
                "warning",
                "invalid",
                path,
                "no entry has a search.mode: say whether each entry is a match, an include or an outcome",
                "bundle-searchset",
            )
        )
        return
    for (i, _entry, resource, _full_url), mode in zip(index.entries, modes, strict=True):
        where = f"{path}.entry[{i}]"
        if mode is None:
            issues.append(
                Issue(
                    "warning",
                    "invalid",
                    where,
                    "the entry has no search.mode (match, include or outcome)",
                    "bundle-searchset",
                )
            )
            continue
        if resource is None:
            continue  # bdl-5
        rtype = resource.get("resourceType")
        if mode in ("match", "include"):
            rid = resource.get("id")
            if not isinstance(rid, str) or not rid:
                issues.append(
                    Issue(
                        "error",
                        "invalid",
                        f"{where}.resource",
                        f"a search result entry (mode {mode}) must have a resource with an id",
                        "bundle-searchset",
                    )
                )
            if mode == "match" and types and rtype not in types:
                issues.append(
                    Issue(
                        "error",
                        "invalid",
                        f"{where}.resource",
                        f"a {rtype} cannot be a match of a search for {' or '.join(types)}",
                        "bundle-searchset",
                    )
                )
        elif mode == "outcome" and rtype != "OperationOutcome":
            issues.append(
                Issue(
                    "error",
                    "invalid",
                    f"{where}.resource",
                    f"an entry with search.mode 'outcome' must be an OperationOutcome, not a {rtype}",
                    "bundle-searchset",
                )
            )


def _search_mode(entry: dict) -> str | None:
    search = entry.get("search")
    mode = search.get("mode") if isinstance(search, dict) else None
    return mode if isinstance(mode, str) else None


def _search_types(url: str) -> list[str]:
    """The resource types a search URL asks for: ``[base]/Type?...`` or ``_type=A,B`` ([] if unsure)."""
    head, _, query = url.partition("?")
    segments = [s for s in head.split("/") if s]
    if segments and segments[-1] == "_search":
        segments.pop()
    if segments and segments[-1] in RESOURCE_TYPES:
        return [segments[-1]]
    for part in query.split("&"):
        key, _, value = part.partition("=")
        if unquote(key) == "_type":
            return [t.strip() for t in unquote(value).split(",") if t.strip()]
    return []


def _list(value: object) -> list:
    return value if isinstance(value, list) else []


# -- walking resources ---------------------------------------------------------------------------------


def _references(resource: dict, path: str) -> Iterator[tuple[dict, str]]:
    """The References with a string ``reference`` in a resource and its contained resources, with paths.

    Nested resources other than contained ones (a Bundle in an entry, Parameters.parameter.resource)
    are resolved in their own context, so they are not walked.
    """
    yield from _walk_references(resource, path)
    for k, contained in enumerate(_list(resource.get("contained"))):
        if isinstance(contained, dict):
            yield from _walk_references(contained, f"{path}.contained[{k}]")


def _walk_references(resource: dict, path: str) -> Iterator[tuple[dict, str]]:
    rtype = resource.get("resourceType")
    root_type = rtype if isinstance(rtype, str) else ""
    stack: list[tuple[dict, str]] = [(resource, path)]
    while stack:
        node, where = stack.pop()
        children: list[tuple[dict, str]] = []
        extension = _is_extension(node)
        for key, value in node.items():
            if key in ("resourceType", "contained") and node is resource:
                continue
            if type(value) is dict:
                if "resourceType" in value:
                    continue
                child = f"{where}.{_element(key, root_type, extension)}"
                if _is_reference(value, key, root_type):
                    yield value, child
                children.append((value, child))
            elif type(value) is list:
                name = None
                for n, item in enumerate(value):
                    if type(item) is dict and "resourceType" not in item:
                        name = name or _element(key, root_type, extension)
                        child = f"{where}.{name}[{n}]"
                        if _is_reference(item, key, root_type):
                            yield item, child
                        children.append((item, child))
        stack.extend(reversed(children))


def _is_extension(element: dict) -> bool:
    """An Extension (its ``value[x]`` is a choice): a ``url`` on an element that is not a resource."""
    return isinstance(element.get("url"), str) and "resourceType" not in element


def _is_reference(value: dict, key: str, root_type: str) -> bool:
    """A Reference, told apart from the other R4 elements with a ``reference`` property."""
    return (
        isinstance(value.get("reference"), str)
        and "language" not in value  # Expression.reference (uri)
        and not (key == "education" and root_type == "Immunization")  # Immunization.education.reference (uri)
    )


def _element(key: str, root_type: str, in_extension: bool) -> str:
    """The FHIRPath step for a JSON property: ``value.ofType(Quantity)`` for ``valueQuantity``."""
    if key[0] == "_":
        key = key[1:]
    if in_extension:
        if key.startswith("value") and key[5:] in _CHOICE_SUFFIXES:
            return f"value.ofType({_CHOICE_SUFFIXES[key[5:]]})"
        return key
    plain = _PLAIN_KEYS.get(key, frozenset())
    if plain is None or root_type in plain:
        return key
    for n in range(1, len(key)):
        if key[n].isupper() and key[:n] in _CHOICE_BASES:
            code = _CHOICE_SUFFIXES.get(key[n:])
            if code is not None:
                return f"{key[:n]}.ofType({code})"
    return key


# -- Element.id ---------------------------------------------------------------------------------------------


def duplicate_id_issues(resource: dict, path: str) -> list[Issue]:
    """Element ids repeated within one resource, and contained resources with the same id.

    ``Element.id`` is "unique id for the element within a resource" (element-definitions); each
    contained resource is a resource of its own (its ids are checked when it is validated) and
    contained resources need distinct ids for ``#id`` references to mean anything. One error per
    repetition, at the element that repeats an id. In a StructureDefinition the snapshot and the
    differential are scopes of their own, and their ElementDefinition ids are sdf-16/sdf-17's.

    The common case (no repetition) is one pass that builds no paths.
    """
    if not isinstance(resource, dict):
        return []
    issues: list[Issue] = []
    contained = resource.get("contained")
    if type(contained) is list and len(contained) > 1:
        _contained_duplicates(contained, path, issues)
    structure = resource.get("resourceType") == "StructureDefinition"
    scopes: list[tuple[object, str, bool]] = [(resource, path, False)]
    if structure:
        for part in ("snapshot", "differential"):
            holder = resource.get(part)
            if type(holder) is dict:
                scopes.append((holder, f"{path}.{part}", True))
    for node, where, definitions in scopes:
        if _has_duplicate(_first_level(node, node is resource, structure, definitions)):
            _report_duplicates(node, where, resource, structure, definitions, issues)
    return issues


def _contained_duplicates(contained: list, path: str, issues: list[Issue]) -> None:
    first: dict[str, int] = {}
    for k, item in enumerate(contained):
        rid = item.get("id") if type(item) is dict else None
        if type(rid) is not str:
            continue
        if rid in first:
            issues.append(
                Issue(
                    "error",
                    "invalid",
                    f"{path}.contained[{k}]",
                    f"duplicate id '{rid}': contained[{first[rid]}] has the same id "
                    "(contained resources must have distinct ids)",
                    "duplicate-id",
                )
            )
        else:
            first[rid] = k


def _skip_root_key(key: str, structure: bool) -> bool:
    return key in ("id", "contained", "resourceType") or (structure and key in ("snapshot", "differential"))


def _first_level(node: dict, is_resource: bool, structure: bool, definitions: bool) -> list:
    """The objects and arrays directly below a scope whose own ids count."""
    if is_resource:
        return [
            v
            for k, v in node.items()
            if (type(v) is dict or type(v) is list) and not _skip_root_key(k, structure)
        ]
    stack: list = []
    for key, value in node.items():
        if definitions and key == "element" and type(value) is list:
            for item in value:  # ElementDefinitions: their own ids are sdf-16/17's, not the content's
                if type(item) is dict:
                    stack.extend(v for v in item.values() if type(v) is dict or type(v) is list)
        elif type(value) is dict or type(value) is list:
            stack.append(value)
    return stack


def _has_duplicate(stack: list) -> bool:
    """True when some element id occurs twice below these objects (nested resources excluded)."""
    seen: set[str] = set()
    while stack:
        node = stack.pop()
        if type(node) is dict:
            if "resourceType" in node:
                continue
            eid = node.get("id")
            if type(eid) is str:
                if eid in seen:
                    return True
                seen.add(eid)
            for value in node.values():
                if type(value) is dict or type(value) is list:
                    stack.append(value)
        else:
            for value in node:
                if type(value) is dict or type(value) is list:
                    stack.append(value)
    return False


def _report_duplicates(
    node: dict, path: str, resource: dict, structure: bool, definitions: bool, issues: list[Issue]
) -> None:
    """The slow pass, only when there is a duplicate: walk in document order with paths."""
    rtype = resource.get("resourceType")
    root_type = rtype if isinstance(rtype, str) else ""
    first: dict[str, str] = {}
    stack: list[tuple[dict, str, bool]] = []  # (element, its path, whether its own id counts)
    if node is resource:
        for key, value in reversed(list(_children(node, path, root_type))):
            if not _skip_root_key(key[0], structure):
                stack.append((value, key[1], True))
    else:
        for key, value in reversed(list(_children(node, path, root_type))):
            stack.append((value, key[1], not (definitions and key[0] == "element")))
    while stack:
        element, where, counts = stack.pop()
        if "resourceType" in element:
            continue
        eid = element.get("id")
        if counts and type(eid) is str:
            if eid in first:
                issues.append(
                    Issue(
                        "error",
                        "invalid",
                        where,
                        f"duplicate id '{eid}': {first[eid]} has the same id "
                        "(an element id must be unique within the resource)",
                        "duplicate-id",
                    )
                )
            else:
                first[eid] = where
        for key, value in reversed(list(_children(element, where, root_type))):
            stack.append((value, key[1], True))


def _children(element: dict, path: str, root_type: str) -> Iterator[tuple[tuple[str, str], dict]]:
    """The object children of an element, in JSON order, with their property name and path."""
    extension = _is_extension(element)
    for key, value in element.items():
        if type(value) is dict:
            yield (key, f"{path}.{_element(key, root_type, extension)}"), value
        elif type(value) is list:
            name = _element(key, root_type, extension)
            for n, item in enumerate(value):
                if type(item) is dict:
                    yield (key, f"{path}.{name}[{n}]"), item
