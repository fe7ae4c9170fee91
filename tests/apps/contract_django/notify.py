"""The project's hub (what a Django app keeps in one module)."""

from __future__ import annotations

from contract_config import hub as make_hub

hub = make_hub()
