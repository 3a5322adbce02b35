"""The ``bnnrobust`` command line: one module per command group (:mod:`.data`,
:mod:`.training`, :mod:`.attacks`, :mod:`.exact`, :mod:`.experiments`, :mod:`.audit`), the
options they share declared once (:mod:`.options`), the application and its error handling
(:mod:`.main`)."""

from bnnrobust.cli.main import app, main

__all__ = ["app", "main"]
