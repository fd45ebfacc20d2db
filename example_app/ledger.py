"""The ledger's operations, shared by the HTML views, the JSON API and the CLI.

Every function takes the session to work in and never commits, rolls back or
closes it: the caller decides how long the unit of work lasts. In a request
that is the extension (commit when the response is a success, roll back
otherwise); in the CLI it is a ``db.transaction()`` block.
"""

from __future__ import annotations

import re

from sqlalchemy import select
from sqlalchemy.orm import Session

from .models import Account, Transfer

#: The largest amount (in cents) a single account opening or transfer accepts:
#: far below the 64-bit limit, so sums can never overflow.
MAX_CENTS = 1_000_000_000_00

_AMOUNT = re.compile(r"\d{1,12}(\.\d{1,2})?")


class LedgerError(Exception):
    """A request the ledger refuses; the message is meant for the user."""


class InsufficientFunds(LedgerError):
    """The source account cannot cover the transfer."""


class SimulatedCrash(RuntimeError):
    """Raised on request in the middle of a transfer, to show what a crash
    between two writes leaves behind: nothing, because the request's
    transaction is rolled back."""


def parse_amount(text: str) -> int:
    """Turn what a person types ("12", "12.5", "12.50") into cents."""
    text = text.strip()
    if not _AMOUNT.fullmatch(text):
        raise LedgerError("Enter an amount like 12 or 12.50 (digits, at most two decimals).")
    units, _, fraction = text.partition(".")
    return int(units) * 100 + int(fraction.ljust(2, "0") or "0")


def format_amount(cents: int) -> str:
    """Cents as a number with two decimals and thousands separators: 1,234.50."""
    sign = "-" if cents < 0 else ""
    units, rest = divmod(abs(cents), 100)
    return f"{sign}{units:,}.{rest:02d}"


def list_accounts(session: Session) -> list[Account]:
    """All accounts, by name."""
    return list(session.scalars(select(Account).order_by(Account.name)))


def recent_transfers(session: Session, limit: int = 10) -> list[Transfer]:
    """The latest transfers, newest first."""
    return list(session.scalars(select(Transfer).order_by(Transfer.id.desc()).limit(limit)))


def open_account(session: Session, name: str, balance_cents: int = 0) -> Account:
    """Add an account with an opening balance; flushed, so it has its id."""
    name = name.strip()
    if not name or len(name) > 80:
        raise LedgerError("The name must have between 1 and 80 characters.")
    if not 0 <= balance_cents <= MAX_CENTS:
        raise LedgerError(f"The opening balance must be between 0 and {format_amount(MAX_CENTS)}.")
    if session.scalar(select(Account.id).where(Account.name == name)) is not None:
        raise LedgerError(f"There is already an account named {name!r}.")
    account = Account(name=name, balance_cents=balance_cents)
    session.add(account)
    session.flush()
    return account


def transfer(
    session: Session, source_id: int, target_id: int, amount_cents: int, *, crash_after_debit: bool = False
) -> Transfer:
    """Move ``amount_cents`` from one account to another and record it.

    The order of the steps is deliberately careless: the money is moved
    first, the UPDATEs are sent to the database, and only then is the
    source's balance checked. A real application would check first; this one
    shows that it does not matter for correctness, because a failed request's
    transaction is rolled back as a whole. ``crash_after_debit`` raises
    :class:`SimulatedCrash` between the debit and the credit.
    """
    if not 0 < amount_cents <= MAX_CENTS:
        raise LedgerError(f"The amount must be more than 0 and at most {format_amount(MAX_CENTS)}.")
    if source_id == target_id:
        raise LedgerError("Pick two different accounts.")
    # Lock both rows, always in id order, so two opposite transfers running at
    # the same time wait for each other instead of deadlocking (SQLite has no
    # row locks; it serialises writers on its own).
    query = select(Account).where(Account.id.in_([source_id, target_id])).order_by(Account.id)
    accounts = {account.id: account for account in session.scalars(query.with_for_update())}
    if source_id not in accounts or target_id not in accounts:
        raise LedgerError("One of the accounts does not exist.")
    source, target = accounts[source_id], accounts[target_id]

    source.balance_cents -= amount_cents
    session.flush()  # the debit is now in the database, inside the open transaction
    if crash_after_debit:
        raise SimulatedCrash(
            f"simulated crash after debiting {source.name!r}, before crediting {target.name!r}"
        )
    target.balance_cents += amount_cents
    session.flush()
    if source.balance_cents < 0:
        raise InsufficientFunds(
            f"{source.name} has only {format_amount(source.balance_cents + amount_cents)},"
            f" which does not cover {format_amount(amount_cents)}."
        )
    record = Transfer(source=source, target=target, amount_cents=amount_cents)
    session.add(record)
    session.flush()
    return record
