"""The public surface of ``gateway.credit`` is declared once and pinned here."""

from __future__ import annotations

from gateway import credit

EXPECTED = {
    "CreditError", "PolicyError", "ImportRefused", "PeriodError", "NotFound",
    "OffPlatformInputError",
    "Period", "parse_period", "period_of",
    "DEFAULT_POLICY_TOML", "POLICY_ENTRY", "CreditPolicy", "LinePolicy", "Pricing",
    "MonitoringRules", "parse_policy", "activate_policy", "current_policy", "policy_version",
    "line_amounts",
    "LINE_ENTRY", "MerchantScores", "LineDecision", "attribute", "decide_lines",
    "latest_decisions", "explain",
    "EVENT_KINDS", "IMPORT_ENTRY", "LoanEvent", "ImportSummary", "parse_events",
    "import_events", "import_bytes", "event_digest", "events_as_jsonl",
    "CLOSE_ENTRY", "CloseSummary", "accrue", "close_period", "collect_interest",
    "INTEREST_RECEIVABLE",
    "CREDIT_LOSS", "CREDIT_LOSS_RECOVERY", "clawback_receivable", "open_credit_chart",
    "BilledReceipt", "billable_receipts", "fee_requests", "ShareLine", "share_lines",
    "share_requests", "SETTLEMENT_ENTRY", "IsvSettlement", "settle_period", "settlements",
    "statement", "statement_csv",
    "ClawbackLine", "clawback_lines", "clawback_requests", "clawback_split",
    "written_off_by_month",
    "ALERT_ENTRY", "ACTION_ENTRY", "Observation", "Alert", "MonitorReport", "loan_positions",
    "evaluate_rules", "monitor_pass",
    "SCORING_PURPOSE", "MONITORING_PURPOSE", "MONITORING_CATEGORIES", "covering_consents",
    "PlatformPds", "platform_pds", "merchant_scores", "offplatform_scores", "consented_scores",
    "TURNOVER_SIGNAL", "SIGNAL_COLUMNS", "MAX_REVENUE_3M", "OffPlatformModel",
    "OffPlatformOutcome", "read_offplatform_model", "read_score_rows", "read_turnover",
    "offplatform_decision_inputs",
    "COMBINER_ENTRY", "COMBINER_SUBDIR", "StoredCombiner", "save_combiner", "load_combiner",
    "OpenLoanCohort", "open_loan_merchants", "rescore_open_loans",
    "SIGNAL_SOURCE", "SignalRelease", "query_signals", "erp_changes_by_merchant",
    "line_decision_days",
    "SimulatedLoans", "simulate_loans",
    "CreditBase", "metadata",
}  # fmt: skip


def test_all_is_pinned() -> None:
    """``__all__`` lists exactly the expected names, once each, and every one exists."""
    assert len(credit.__all__) == len(set(credit.__all__))
    assert set(credit.__all__) == EXPECTED
    assert all(hasattr(credit, name) for name in credit.__all__)
