"""syncd's state DB: what it did (runs, pair results, the per-member ledger) and what it must remember
between passes (bindings, owned members, recipient ids, permanent rejects, quarantined pairs, the shared rate
budgets). See `Store`."""

from syncd.state.migrate import head_revision
from syncd.state.records import (
    Binding,
    LedgerEntry,
    LedgerRow,
    PairRow,
    Quarantined,
    RejectRow,
    RunOutcome,
    RunRow,
    RunTrigger,
    StoredReject,
)
from syncd.state.store import StateRecipientCache, Store, mask_url

__all__ = [
    "Binding",
    "LedgerEntry",
    "LedgerRow",
    "PairRow",
    "Quarantined",
    "RejectRow",
    "RunOutcome",
    "RunRow",
    "RunTrigger",
    "StateRecipientCache",
    "Store",
    "StoredReject",
    "head_revision",
    "mask_url",
]
