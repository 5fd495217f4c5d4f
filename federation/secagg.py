"""SecAgg+ for fedgate's jobs (Flower's legacy ``DefaultWorkflow`` path, wrapped).

The implementation lives in :mod:`federation.apps._secagg`, next to the apps it
bridges; see its docstring for how the legacy records are translated.
"""

from __future__ import annotations

from .apps._secagg import TokenCheck, legacy_bridge_mod, run_secagg_rounds, secagg_mod

__all__ = ["TokenCheck", "legacy_bridge_mod", "run_secagg_rounds", "secagg_mod"]
