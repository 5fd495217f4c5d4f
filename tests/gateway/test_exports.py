"""The public surface of ``gateway`` and its one exception root, pinned."""

from __future__ import annotations

import gateway
from gateway.credit import CreditError, ImportRefused, NotFound, PeriodError, PolicyError
from gateway.demo import DemoError
from gateway.jobs import JobSetupError
from gateway.witness import WitnessFolderError


def test_all_is_pinned() -> None:
    """``__all__`` lists exactly the expected names, once each, and every one exists."""
    assert gateway.__all__ == ["GatewayError", "Settings"]
    assert all(hasattr(gateway, name) for name in gateway.__all__)


def test_every_gateway_error_has_the_one_root_and_a_code() -> None:
    """JobSetupError, DemoError, the credit errors and WitnessFolderError share GatewayError."""
    leaves = [JobSetupError, DemoError, CreditError, PolicyError, ImportRefused, PeriodError,
              NotFound, WitnessFolderError]

    errors = [leaf("boom", code="SOME_CODE") for leaf in leaves]

    assert all(isinstance(e, gateway.GatewayError) and e.code == "SOME_CODE" for e in errors)
