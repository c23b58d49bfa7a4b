"""The embedded Vaccicard simulator: the default endpoint the evaluation suite and vendor developers use.

A framework-free core answers plain ``HttpRequest`` objects with plain ``HttpResponse`` objects (see
``http``): the FHIR REST API under ``/fhir``, a faithful mock of eHealth's IAM Connect (Keycloak) under
``/auth`` (``iam``), fictitious test patients, professionals and organisations (``testdata``), fault
injection and traffic capture. HTTP servers and the ASGI application are thin adapters over that core.
Everything the real, privately documented Vaccicard API does is an assumed default that configuration
can change.
"""
