"""Credit models: ``g_erp`` (torch, federated), ``f_platform`` (scikit-learn), the combiner."""

from ._combiner import Combiner, PDEstimates
from ._g_erp import (
    G_ARCHS,
    LogisticG,
    MlpG,
    build_g_erp,
    get_weights,
    predict_proba,
    set_weights,
    train_local,
)
from ._gate import GatedCombiner, fit_gated_combiner, platform_scores
from ._platform import F_KINDS, PlatformModel, fit_f_platform, out_of_fold_f_scores

__all__ = [
    "G_ARCHS",
    "LogisticG",
    "MlpG",
    "build_g_erp",
    "train_local",
    "predict_proba",
    "get_weights",
    "set_weights",
    "F_KINDS",
    "PlatformModel",
    "fit_f_platform",
    "out_of_fold_f_scores",
    "Combiner",
    "PDEstimates",
    "GatedCombiner",
    "fit_gated_combiner",
    "platform_scores",
]
