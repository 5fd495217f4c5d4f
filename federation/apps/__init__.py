"""fedgate's Flower apps: the platform ServerApp, the ISV ClientApp and its mods.

Flower loads ``federation.apps.server_app:app`` and ``federation.apps.client_app:app``;
everything else here is for the runner, the CLI and tests.
"""

from __future__ import annotations

import os

# Privacy defaults before this package imports Flower and Ray (both read them at import
# time): no Flower telemetry or update check, no Ray usage stats, and Ray in single-machine
# mode, where its node address is the loopback and GCS/raylet listen on 127.0.0.1 only
# (otherwise Ray rewrites 127.0.0.1 to the machine's routable address and binds to all
# interfaces). An explicit setting in the environment wins.
for _var, _value in (
    ("FLWR_TELEMETRY_ENABLED", "0"),
    ("FLWR_DISABLE_UPDATE_CHECK", "1"),
    ("RAY_USAGE_STATS_ENABLED", "0"),
    ("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0"),
):
    os.environ.setdefault(_var, _value)

from ._keys import ERR  # noqa: E402 - after the privacy defaults above
from ._mods import egress_guard_mod, make_manifest_mod, manifest_mod, usage_receipt_mod  # noqa: E402
from ._node import Cohort, NodeConfig, load_cohort  # noqa: E402
from ._strategy import ConsentedStrategy, RoundLog  # noqa: E402
from .client_app import build_client_app  # noqa: E402
from .server_app import CohortSource, ServerSettings, job_record, make_server_app  # noqa: E402

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
