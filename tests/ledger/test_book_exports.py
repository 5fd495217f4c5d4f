"""The book's part of ``ledger.__all__`` is pinned: adding or dropping a name is deliberate."""

from __future__ import annotations

import ledger
from ledger import _book, _bulk, _money, _payout

BOOK_NAMES = {
    "Money",
    "Account",
    "AccountKind",
    "TransferRequest",
    "Transfer",
    "TrialBalance",
    "TrialBalanceRow",
    "open_account",
    "get_account",
    "list_accounts",
    "post_transfer",
    "post_linked",
    "post_many",
    "BulkPosting",
    "MAX_BULK",
    "get_transfer",
    "transfers_of",
    "balance",
    "trial_balance",
    "split",
    "split_by",
    "PLATFORM_CASH",
    "LOANS_RECEIVABLE",
    "EQUITY",
    "INTEREST_INCOME",
    "DATA_USAGE_FEE_EXPENSE",
    "INTEREST_SHARE_EXPENSE",
    "isv_payable",
    "isv_settled",
    "open_standard_chart",
    "open_isv_accounts",
    "data_usage_fee",
    "interest_share",
    "settlement_instructed",
    "settlement_cleared",
    "MoneyError",
    "FloatMoneyError",
    "CurrencyMismatch",
    "AccountRejected",
    "TransferRejected",
    "SplitError",
}


def test_book_names_are_exported() -> None:
    """Every pinned book name is in ledger.__all__ and resolves to the package attribute."""
    missing = BOOK_NAMES - set(ledger.__all__)

    assert missing == set()
    assert all(getattr(ledger, name) is not None for name in BOOK_NAMES)


def test_book_modules_export_nothing_unpinned() -> None:
    """Every public name of the book's modules that the package re-exports is pinned."""
    module_names = (
        set(_book.__all__) | set(_bulk.__all__) | set(_money.__all__) | set(_payout.__all__)
    )

    reexported = module_names & set(ledger.__all__)

    assert reexported <= BOOK_NAMES
    assert len(ledger.__all__) == len(set(ledger.__all__))
