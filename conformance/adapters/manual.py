"""The manual adapter: the guided evaluation session, an operator acting in the vendor software.

For each intent the harness shows the operator, in the report language (en, fr, nl, de), what to do in
the vendor software in plain words, waits until it is done, then asks what the software showed: did it
confirm, refuse or fail, the message it displayed, the record's key, and for a history each line shown.
The answers become the ``AdapterResult`` the Then-steps judge, next to the traffic the register saw.
It needs an interactive terminal and refuses to start without one (CI, a pipe), saying why.
"""

from __future__ import annotations

import sys
from typing import Any, TextIO

from conformance.adapters.intents import (
    AdapterResult,
    CancelVaccination,
    Coding,
    CorrectVaccination,
    DisplayedVaccination,
    Identifier,
    Intent,
    ReadHistory,
    RecordNotDone,
    RecordVaccination,
)
from conformance.errors import ConfigurationError

__all__ = ["MESSAGES", "ManualAdapter"]

MESSAGES: dict[str, dict[str, str]] = {
    "en": {
        "record-vaccination": "Record this vaccination for patient {patient}:",
        "record-not-done": "Record that this vaccination was NOT given to patient {patient}:",
        "read-history": "Open the vaccination history of patient {patient}.",
        "correct-vaccination": "Correct the vaccination with key {key} as follows:",
        "cancel-vaccination": "Cancel the vaccination with key {key} (reason: {reason}).",
        "as": "Log in as professional {professional} first.",
        "encrypted": "Use the software's encrypted variant: the vaccination is sealed for Vaccicard.",
        "done": "Press Enter when it is done in the software.",
        "outcome": "What did the software show? [s] confirmed  [r] refused  [f] failed: ",
        "message": "Type the message the software showed (Enter for none): ",
        "key": "Type the record's key the software shows (system|value, Enter for none): ",
        "count": "How many vaccinations does the software show? ",
        "line": "Vaccination {n}: status (completed, not-done, cancelled); vaccine code; date: ",
        "terminal": "the manual adapter needs an interactive terminal: an operator carries out each "
        "step in the vendor software (run it from a terminal, not from CI or a pipe)",
    },
    "fr": {
        "record-vaccination": "Enregistrez cette vaccination pour le patient {patient} :",
        "record-not-done": "Enregistrez que cette vaccination n'a PAS été administrée au patient {patient} :",
        "read-history": "Ouvrez l'historique vaccinal du patient {patient}.",
        "correct-vaccination": "Corrigez la vaccination de clé {key} comme suit :",
        "cancel-vaccination": "Annulez la vaccination de clé {key} (motif : {reason}).",
        "as": "Connectez-vous d'abord en tant que professionnel {professional}.",
        "encrypted": "Utilisez la variante chiffrée du logiciel : la vaccination est scellée pour Vaccicard.",
        "done": "Appuyez sur Entrée quand c'est fait dans le logiciel.",
        "outcome": "Qu'a affiché le logiciel ? [s] confirmé  [r] refusé  [f] échec : ",
        "message": "Tapez le message affiché par le logiciel (Entrée si aucun) : ",
        "key": "Tapez la clé de l'enregistrement affichée (système|valeur, Entrée si aucune) : ",
        "count": "Combien de vaccinations le logiciel affiche-t-il ? ",
        "line": "Vaccination {n} : statut (completed, not-done, cancelled) ; code du vaccin ; date : ",
        "terminal": "l'adaptateur manuel a besoin d'un terminal interactif : un opérateur effectue "
        "chaque étape dans le logiciel (lancez-le depuis un terminal, pas depuis la CI ni un tube)",
    },
    "nl": {
        "record-vaccination": "Registreer deze vaccinatie voor patiënt {patient}:",
        "record-not-done": "Registreer dat deze vaccinatie NIET werd toegediend aan patiënt {patient}:",
        "read-history": "Open de vaccinatiehistoriek van patiënt {patient}.",
        "correct-vaccination": "Corrigeer de vaccinatie met sleutel {key} als volgt:",
        "cancel-vaccination": "Annuleer de vaccinatie met sleutel {key} (reden: {reason}).",
        "as": "Meld u eerst aan als zorgverlener {professional}.",
        "encrypted": "Gebruik de versleutelde variant van de software: de vaccinatie wordt verzegeld voor Vaccicard.",
        "done": "Druk op Enter wanneer het in de software gedaan is.",
        "outcome": "Wat toonde de software? [s] bevestigd  [r] geweigerd  [f] mislukt: ",
        "message": "Typ de boodschap die de software toonde (Enter voor geen): ",
        "key": "Typ de sleutel van de registratie die de software toont (systeem|waarde, Enter voor geen): ",
        "count": "Hoeveel vaccinaties toont de software? ",
        "line": "Vaccinatie {n}: status (completed, not-done, cancelled); vaccincode; datum: ",
        "terminal": "de manuele adapter heeft een interactieve terminal nodig: een operator voert elke "
        "stap uit in de software (start hem vanuit een terminal, niet vanuit CI of een pipe)",
    },
    "de": {
        "record-vaccination": "Erfassen Sie diese Impfung für Patient {patient}:",
        "record-not-done": "Erfassen Sie, dass diese Impfung Patient {patient} NICHT verabreicht wurde:",
        "read-history": "Öffnen Sie die Impfhistorie von Patient {patient}.",
        "correct-vaccination": "Korrigieren Sie die Impfung mit Schlüssel {key} wie folgt:",
        "cancel-vaccination": "Stornieren Sie die Impfung mit Schlüssel {key} (Grund: {reason}).",
        "as": "Melden Sie sich zuerst als Fachkraft {professional} an.",
        "encrypted": "Nutzen Sie die verschlüsselte Variante der Software: die Impfung wird für Vaccicard versiegelt.",
        "done": "Drücken Sie die Eingabetaste, wenn es in der Software erledigt ist.",
        "outcome": "Was zeigte die Software? [s] bestätigt  [r] abgelehnt  [f] fehlgeschlagen: ",
        "message": "Geben Sie die Meldung der Software ein (Eingabetaste für keine): ",
        "key": "Geben Sie den Schlüssel des Eintrags ein (System|Wert, Eingabetaste für keinen): ",
        "count": "Wie viele Impfungen zeigt die Software? ",
        "line": "Impfung {n}: Status (completed, not-done, cancelled); Impfstoffcode; Datum: ",
        "terminal": "der manuelle Adapter braucht ein interaktives Terminal: ein Bediener führt jeden "
        "Schritt in der Software aus (starten Sie ihn in einem Terminal, nicht in CI oder einer Pipe)",
    },
}

_OUTCOMES = {"s": "succeeded", "r": "rejected", "f": "failed"}
_DETAIL_FIELDS = (
    "vaccine",
    "occurrence",
    "occurrence_text",
    "product",
    "route",
    "body_site",
    "care_setting",
    "reaction",
    "status_reason",
    "kind",
    "performer",
    "business_identifier",
    "note",
)


class ManualAdapter:
    """Shows each intent to an operator and reads back what the vendor software showed."""

    def __init__(
        self,
        *,
        lang: str = "en",
        fhir_base_url: str | None = None,
        stdin: TextIO | None = None,
        stdout: TextIO | None = None,
        require_terminal: bool = True,
    ) -> None:
        """``stdin``/``stdout`` default to the process's; without a terminal this raises ConfigurationError."""
        if lang not in MESSAGES:
            raise ConfigurationError(f"unknown language {lang!r}: choose one of {', '.join(MESSAGES)}")
        self.text = MESSAGES[lang]
        self.stdin = stdin or sys.__stdin__ or sys.stdin
        self.stdout = stdout or sys.__stdout__ or sys.stdout
        if require_terminal and not (_is_tty(self.stdin) and _is_tty(self.stdout)):
            raise ConfigurationError(self.text["terminal"])
        self.fhir_base_url = fhir_base_url

    def perform(self, intent: Intent) -> AdapterResult:
        """Tell the operator what to do, wait, and return what the operator says the software showed."""
        intent.to_json()
        self._say("")
        if intent.professional:
            self._say(self.text["as"].format(professional=intent.professional))
        self._say(self._instruction(intent))
        if getattr(intent, "encrypted", False):
            self._say(self.text["encrypted"])
        for line in _details(intent):
            self._say(f"  - {line}")
        self._ask(self.text["done"])
        outcome = ""
        while outcome not in _OUTCOMES:
            outcome = self._ask(self.text["outcome"]).strip().lower()[:1]
        message = self._ask(self.text["message"]).strip() or None
        shown: tuple[DisplayedVaccination, ...] = ()
        keys: tuple[Identifier, ...] = ()
        if isinstance(intent, ReadHistory) and outcome == "s":
            shown = self._history()
        elif outcome == "s" and isinstance(intent, RecordVaccination | RecordNotDone):
            keys = self._key(intent.business_identifier)
        result = AdapterResult(
            outcome=_OUTCOMES[outcome],  # type: ignore[arg-type]
            message=message,
            business_identifiers=keys,
            vaccinations=shown,
        )
        result.to_json()
        return result

    def _instruction(self, intent: Intent) -> str:
        if isinstance(intent, CorrectVaccination | CancelVaccination):
            key = f"{intent.business_identifier.system}|{intent.business_identifier.value}"
            reason = getattr(intent, "reason", "")
            return self.text[intent.action].format(key=key, reason=reason)
        return self.text[intent.action].format(patient=getattr(intent, "patient", ""))

    def _key(self, given: Identifier | None) -> tuple[Identifier, ...]:
        if given is not None:
            return (given,)
        system, _, value = self._ask(self.text["key"]).strip().rpartition("|")
        return (Identifier(system, value),) if system and value else ()

    def _history(self) -> tuple[DisplayedVaccination, ...]:
        count = self._ask(self.text["count"]).strip()
        while not count.isdigit():
            count = self._ask(self.text["count"]).strip()
        shown = []
        for number in range(1, int(count) + 1):
            parts = [p.strip() for p in self._ask(self.text["line"].format(n=number)).split(";")]
            while parts[0] not in ("completed", "not-done", "cancelled"):
                parts = [p.strip() for p in self._ask(self.text["line"].format(n=number)).split(";")]
            code = parts[1] if len(parts) > 1 and parts[1] else None
            shown.append(
                DisplayedVaccination(
                    status=parts[0],  # type: ignore[arg-type]
                    vaccine=Coding("http://snomed.info/sct", code) if code else None,
                    occurrence=parts[2] if len(parts) > 2 and parts[2] else None,
                )
            )
        return tuple(shown)

    def _say(self, text: str) -> None:
        self.stdout.write(text + "\n")
        self.stdout.flush()

    def _ask(self, prompt: str) -> str:
        self.stdout.write(prompt)
        self.stdout.flush()
        line = self.stdin.readline()
        if not line:
            raise ConfigurationError("the operator's input ended (end of file): the manual session stopped")
        return line.rstrip("\n")


def _is_tty(stream: Any) -> bool:
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


def _details(intent: Intent) -> list[str]:
    lines = []
    for name in _DETAIL_FIELDS:
        value = getattr(intent, name, None)
        if value is not None:
            lines.append(f"{name.replace('_', ' ')}: {_plain(value)}")
    return lines


def _plain(value: Any) -> str:
    if isinstance(value, Coding):
        return f"{value.display or value.code} ({value.system}|{value.code})"
    if isinstance(value, Identifier):
        return f"{value.system}|{value.value}"
    fields = getattr(value, "__dataclass_fields__", None)
    if fields:
        parts = [f"{k.replace('_', ' ')} {_plain(getattr(value, k))}" for k in fields if getattr(value, k)]
        return ", ".join(parts)
    return str(value)
