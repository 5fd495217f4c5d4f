"""Deployment errors: one branch under :class:`~federation.FederationError`.

    FederationError
    └── DeploymentError              the deployment runtime cannot do what was asked; ``code``
        ├── ConfigError              a node or platform config file is wrong (BAD_NODE_CONFIG …)
        ├── ProcessError             a SuperLink, SuperNode or proxy did not start or died
        └── ControlError             the SuperLink's Control API refused a request
                                     (UNKNOWN_NODE, KEY_IN_USE, START_RUN_FAILED …)

A submitted run that finishes ``failed`` raises :class:`~federation.JobFailed`
(with the run's reason), not one of these.
"""

from __future__ import annotations

from .._errors import FederationError

__all__ = ["DeploymentError", "ConfigError", "ProcessError", "ControlError"]


class DeploymentError(FederationError):
    """Root of the deployment runtime's errors."""

    code = "DEPLOYMENT_ERROR"


class ConfigError(DeploymentError):
    """A node or platform configuration file is missing, malformed or inconsistent."""

    code = "BAD_NODE_CONFIG"


class ProcessError(DeploymentError):
    """A SuperLink, SuperNode or proxy process did not come up, or exited."""

    code = "PROCESS_FAILED"


class ControlError(DeploymentError):
    """The SuperLink's Control API refused or failed a request."""

    code = "CONTROL_FAILED"
