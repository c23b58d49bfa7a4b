"""FHIR machinery: the package cache (``packages``), the resource index over a set of packages
(``definitions``), and the profile validator built on them, with its FHIRPath and terminology layers."""
