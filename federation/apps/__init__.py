"""fedgate's Flower apps: the platform ServerApp, the ISV ClientApp and its mods.

Flower loads ``federation.apps.server_app:app`` and ``federation.apps.client_app:app``;
everything else here is for the runner, the CLI and tests.
"""

from ._keys import ERR
from ._mods import egress_guard_mod, make_manifest_mod, manifest_mod, usage_receipt_mod
from ._node import Cohort, NodeConfig, load_cohort
from ._strategy import ConsentedStrategy, RoundLog
from .client_app import build_client_app
from .server_app import CohortSource, ServerSettings, job_record, make_server_app

__all__ = [
    "ERR",
    "Cohort",
    "CohortSource",
    "ConsentedStrategy",
    "NodeConfig",
    "RoundLog",
    "ServerSettings",
    "build_client_app",
    "egress_guard_mod",
    "job_record",
    "load_cohort",
    "make_manifest_mod",
    "make_server_app",
    "manifest_mod",
    "usage_receipt_mod",
]
