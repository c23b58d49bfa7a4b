"""The report's own words in English, French, Dutch and German (``messages/<lang>.toml``).

Every text the harness writes into a report comes from these catalogues; scenario and step texts stay
as written in the features. Each catalogue is a flat TOML table of ``key = "text"``; texts may hold
``{name}`` placeholders filled with ``str.format``. ``Messages.load()`` refuses catalogues whose keys
or placeholders differ from the English one, so a missing translation fails at load, not in a report.
"""

from __future__ import annotations

import string
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

from conformance.errors import ConfigurationError
from conformance.evaluation_items import LANGUAGES

__all__ = ["LANGUAGE_NAMES", "Messages"]

LANGUAGE_NAMES: Mapping[str, str] = {"en": "English", "fr": "Français", "nl": "Nederlands", "de": "Deutsch"}
"""Each language in its own name, as a language switch shows it."""


def _placeholders(text: str) -> frozenset[str]:
    return frozenset(name for _, name, _, _ in string.Formatter().parse(text) if name)


@dataclass(frozen=True)
class Messages:
    """The message catalogues of every language, checked against the English one."""

    catalogues: Mapping[str, Mapping[str, str]]

    @classmethod
    @cache
    def load(cls) -> Messages:
        """The shipped catalogues (read once per process)."""
        catalogues = {}
        for lang in LANGUAGES:
            source = resources.files(__package__).joinpath("messages").joinpath(f"{lang}.toml")
            try:
                data = tomllib.loads(source.read_text(encoding="utf-8"))
            except tomllib.TOMLDecodeError as exc:
                raise ConfigurationError(f"report messages {lang}.toml: not valid TOML: {exc}") from None
            catalogues[lang] = data
        return cls.checked(catalogues)

    @classmethod
    def checked(cls, catalogues: Mapping[str, Mapping[str, Any]]) -> Messages:
        """Catalogues whose keys and placeholders match English in every language, else ConfigurationError."""
        english = catalogues.get("en", {})
        problems = []
        for lang in LANGUAGES:
            catalogue = catalogues.get(lang)
            if catalogue is None:
                problems.append(f"{lang}: no catalogue")
                continue
            for key in sorted(set(english) - set(catalogue)):
                problems.append(f"{lang}: {key} is missing")
            for key in sorted(set(catalogue) - set(english)):
                problems.append(f"{lang}: {key} is not in the English catalogue")
            for key, text in catalogue.items():
                if not isinstance(text, str) or not text.strip():
                    problems.append(f"{lang}: {key} must be a non-empty string")
                elif key in english and _placeholders(text) != _placeholders(str(english[key])):
                    problems.append(f"{lang}: {key} has placeholders {sorted(_placeholders(text))}")
        if problems:
            raise ConfigurationError("report messages: " + "; ".join(problems))
        return cls({lang: dict(catalogues[lang]) for lang in LANGUAGES})

    def get(self, lang: str, key: str, **values: Any) -> str:
        """The text of ``key`` in ``lang``, with placeholders filled; an unknown key is a KeyError."""
        text = self.catalogues[lang][key]
        return text.format(**values) if values else text

    def all(self, key: str, **values: Any) -> dict[str, str]:
        """The text of ``key`` in every language."""
        return {lang: self.get(lang, key, **values) for lang in LANGUAGES}
