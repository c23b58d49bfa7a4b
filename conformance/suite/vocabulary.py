"""Words a reviewer reads in the scenarios, turned into the codes the IG binds.

A scenario says ``| vaccine | Measles vaccine |`` or ``| route | intramuscular |``; ``Vocabulary``
finds the concept in the BeVaccination value set bound to that element, by code or by any display or
designation (case and spacing ignored), so the words in the features are the IG's own and a word the
value set does not know fails the scenario's setup with the value set's name.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from conformance.adapters.intents import Coding
from conformance.errors import ConfigurationError
from conformance.fhir.terminology import Terminology

__all__ = ["VALUE_SETS", "Vocabulary"]

_VS = "https://www.ehealth.fgov.be/standards/fhir/vaccination/ValueSet/"
VALUE_SETS = {
    "vaccine": _VS + "be-vs-vaccine-code",
    "route": _VS + "be-vs-vaccination-administration-route",
    "body site": _VS + "be-vs-vaccination-bodysite",
    "place": _VS + "be-vs-care-location",
    "status reason": _VS + "be-vs-vaccination-status-reason",
}
"""The value set each kind of word comes from (the bindings of be-vaccination)."""

REACTIONS = {
    "fever": Coding("http://snomed.info/sct", "386661006", "Fever"),
    "skin rash": Coding("http://snomed.info/sct", "271807003", "Eruption of skin"),
    "pain at the injection site": Coding("http://snomed.info/sct", "1003839009", "Pain at injection site"),
}
"""Reactions after vaccination (be-vaccination leaves the manifestation unbound; SNOMED CT is used)."""


def _normal(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip().casefold()


@dataclass(frozen=True)
class Vocabulary:
    """Looks words up in the value sets of ``VALUE_SETS``."""

    terminology: Terminology

    def coding(self, kind: str, word: str) -> Coding:
        """The coding ``word`` names in the value set of ``kind`` (a key of ``VALUE_SETS``)."""
        if kind == "reaction":
            if _normal(word) not in REACTIONS:
                raise ConfigurationError(f"unknown reaction {word!r}: use one of {', '.join(REACTIONS)}")
            return REACTIONS[_normal(word)]
        url = VALUE_SETS.get(kind)
        if url is None:
            raise ConfigurationError(f"no value set for {kind!r}: use one of {', '.join(VALUE_SETS)}")
        expansion = self.terminology.expansion(url)
        if expansion is None:
            raise ConfigurationError(f"value set {url} is not in the FHIR packages")
        wanted = _normal(word)
        for concept in expansion.members.values():
            names = {concept.code.casefold(), _normal(concept.display or "")}
            names.update(_normal(d.value) for d in concept.designations)
            if wanted in names:
                return Coding(concept.system, concept.code, concept.display)
        raise ConfigurationError(f"{word!r} is not a {kind} of {url} (by code, display or designation)")
