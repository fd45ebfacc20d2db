"""The ledger's tables, as plain SQLAlchemy 2.0 declarative models.

Nothing here knows about Flask or the extension: the models are usable from
any script with any session. Amounts are whole cents in 64-bit integers, so
no float rounding can ever lose money.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, DateTime, ForeignKey, String, func
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


class Base(DeclarativeBase):
    """The example app's own declarative base; the extension needs none."""


class Account(Base):
    """A named account holding a balance in cents."""

    # Prefixed table names, so the example's tables never collide with other
    # tables in a shared test database.
    __tablename__ = "ledger_accounts"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(80), unique=True)
    balance_cents: Mapped[int] = mapped_column(BigInteger, default=0)

    def __repr__(self) -> str:
        return f"<Account {self.id} {self.name!r} balance_cents={self.balance_cents}>"


class Transfer(Base):
    """Money moved from one account to another: one row per committed transfer."""

    __tablename__ = "ledger_transfers"

    id: Mapped[int] = mapped_column(primary_key=True)
    source_id: Mapped[int] = mapped_column(ForeignKey("ledger_accounts.id"))
    target_id: Mapped[int] = mapped_column(ForeignKey("ledger_accounts.id"))
    amount_cents: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(DateTime, server_default=func.now())

    source: Mapped[Account] = relationship(foreign_keys=[source_id])
    target: Mapped[Account] = relationship(foreign_keys=[target_id])

    def __repr__(self) -> str:
        return f"<Transfer {self.id} {self.source_id}->{self.target_id} amount_cents={self.amount_cents}>"


class Receipt(Base):
    """The receipt of a committed transfer, written by a background job
    enqueued once the transfer is committed (``example_app.receipts``)."""

    __tablename__ = "ledger_receipts"

    id: Mapped[int] = mapped_column(primary_key=True)
    transfer_id: Mapped[int] = mapped_column(ForeignKey("ledger_transfers.id"), unique=True)
    text: Mapped[str] = mapped_column(String(200))
    #: Which queue ran the job: "thread", "celery" or "rq".
    written_by: Mapped[str] = mapped_column(String(20))
