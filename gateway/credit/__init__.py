"""The money loop on the platform's side: policy, lines, loans, accrual, fees, shares, settlement.

Every operation is a plain function that takes the caller's SQLAlchemy session and
works inside its transaction (the caller commits); every state change an auditor
cares about is a ledger entry written in that same transaction. Money is integer
fen with a currency; each module's docstring states its rounding rule.
"""

from ._accrual import CLOSE_ENTRY, CloseSummary, accrue, close_period, collect_interest
from ._chart import (
    CREDIT_LOSS,
    CREDIT_LOSS_RECOVERY,
    INTEREST_RECEIVABLE,
    clawback_receivable,
    open_credit_chart,
)
from ._combiner_store import (
    COMBINER_ENTRY,
    COMBINER_SUBDIR,
    StoredCombiner,
    load_combiner,
    save_combiner,
)
from ._consents import (
    MONITORING_CATEGORIES,
    MONITORING_PURPOSE,
    SCORING_PURPOSE,
    covering_consents,
)
from ._errors import (
    CreditError,
    ImportRefused,
    NotFound,
    OffPlatformInputError,
    PeriodError,
    PolicyError,
)
from ._fees import BilledReceipt, billable_receipts, fee_requests
from ._lines import (
    LINE_ENTRY,
    LineDecision,
    MerchantScores,
    attribute,
    decide_lines,
    explain,
    latest_decisions,
)
from ._loans import (
    EVENT_KINDS,
    IMPORT_ENTRY,
    ImportSummary,
    LoanEvent,
    event_digest,
    events_as_jsonl,
    import_bytes,
    import_events,
    parse_events,
)
from ._models import CreditBase
from ._monitoring import (
    ACTION_ENTRY,
    ALERT_ENTRY,
    Alert,
    MonitorReport,
    Observation,
    evaluate_rules,
    loan_positions,
    monitor_pass,
)
from ._offplatform import (
    MAX_REVENUE_3M,
    SIGNAL_COLUMNS,
    TURNOVER_SIGNAL,
    OffPlatformModel,
    OffPlatformOutcome,
    offplatform_decision_inputs,
    read_offplatform_model,
    read_score_rows,
    read_turnover,
)
from ._period import Period, parse_period, period_of
from ._policy import (
    DEFAULT_POLICY_TOML,
    POLICY_ENTRY,
    CreditPolicy,
    LinePolicy,
    MonitoringRules,
    Pricing,
    activate_policy,
    current_policy,
    line_amounts,
    parse_policy,
    policy_version,
)
from ._rescore import OpenLoanCohort, open_loan_merchants, rescore_open_loans
from ._scoring import (
    PlatformPds,
    consented_scores,
    merchant_scores,
    offplatform_scores,
    platform_pds,
)
from ._settlement import (
    SETTLEMENT_ENTRY,
    IsvSettlement,
    settle_period,
    settlements,
    statement,
    statement_csv,
)
from ._shares import (
    ClawbackLine,
    ShareLine,
    clawback_lines,
    clawback_requests,
    clawback_split,
    share_lines,
    share_requests,
    written_off_by_month,
)
from ._signals import (
    SIGNAL_SOURCE,
    SignalRelease,
    erp_changes_by_merchant,
    line_decision_days,
    query_signals,
)
from ._simulator import SimulatedLoans, simulate_loans

metadata = CreditBase.metadata

__all__ = [
    # errors
    "CreditError",
    "PolicyError",
    "ImportRefused",
    "PeriodError",
    "NotFound",
    "OffPlatformInputError",
    # periods
    "Period",
    "parse_period",
    "period_of",
    # policy
    "DEFAULT_POLICY_TOML",
    "POLICY_ENTRY",
    "CreditPolicy",
    "LinePolicy",
    "Pricing",
    "MonitoringRules",
    "parse_policy",
    "activate_policy",
    "current_policy",
    "policy_version",
    "line_amounts",
    # lines
    "LINE_ENTRY",
    "MerchantScores",
    "LineDecision",
    "attribute",
    "decide_lines",
    "latest_decisions",
    "explain",
    # loans
    "EVENT_KINDS",
    "IMPORT_ENTRY",
    "LoanEvent",
    "ImportSummary",
    "parse_events",
    "import_events",
    "import_bytes",
    "event_digest",
    "events_as_jsonl",
    # accrual and the book
    "CLOSE_ENTRY",
    "CloseSummary",
    "accrue",
    "close_period",
    "collect_interest",
    "INTEREST_RECEIVABLE",
    "CREDIT_LOSS",
    "CREDIT_LOSS_RECOVERY",
    "clawback_receivable",
    "open_credit_chart",
    # fees, shares, settlement
    "BilledReceipt",
    "billable_receipts",
    "fee_requests",
    "ShareLine",
    "share_lines",
    "share_requests",
    "ClawbackLine",
    "clawback_lines",
    "clawback_requests",
    "clawback_split",
    "written_off_by_month",
    "SETTLEMENT_ENTRY",
    "IsvSettlement",
    "settle_period",
    "settlements",
    "statement",
    "statement_csv",
    # monitoring
    "ALERT_ENTRY",
    "ACTION_ENTRY",
    "Observation",
    "Alert",
    "MonitorReport",
    "loan_positions",
    "evaluate_rules",
    "monitor_pass",
    # scoring inputs and consents
    "SCORING_PURPOSE",
    "MONITORING_PURPOSE",
    "MONITORING_CATEGORIES",
    "covering_consents",
    "PlatformPds",
    "platform_pds",
    "merchant_scores",
    "offplatform_scores",
    "consented_scores",
    # off-platform merchants (ERP-only PD, ERP-reported turnover)
    "TURNOVER_SIGNAL",
    "SIGNAL_COLUMNS",
    "MAX_REVENUE_3M",
    "OffPlatformModel",
    "OffPlatformOutcome",
    "read_offplatform_model",
    "read_score_rows",
    "read_turnover",
    "offplatform_decision_inputs",
    "COMBINER_ENTRY",
    "COMBINER_SUBDIR",
    "StoredCombiner",
    "save_combiner",
    "load_combiner",
    # simulation
    "OpenLoanCohort",
    "open_loan_merchants",
    "rescore_open_loans",
    "SIGNAL_SOURCE",
    "SignalRelease",
    "query_signals",
    "erp_changes_by_merchant",
    "line_decision_days",
    "SimulatedLoans",
    "simulate_loans",
    # storage
    "CreditBase",
    "metadata",
]
