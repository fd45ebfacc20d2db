"""The JSON API: the same operations as the HTML pages, under ``/api``.

Errors are JSON too: 422 for a request the ledger refuses, 400 for a body
that is not a JSON object, 404 for an unknown account, and 500 for the
simulated crash (``POST /api/transfers?fault=1``). Whatever the error, the
request's writes are rolled back by the extension.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, abort, current_app, request, url_for
from sqlalchemy import select
from werkzeug.exceptions import HTTPException

from . import ledger, receipts
from .extensions import db
from .models import Account, Receipt, Transfer

bp = Blueprint("api", __name__, url_prefix="/api")

Json = dict[str, Any]


def account_json(account: Account) -> Json:
    return {"id": account.id, "name": account.name, "balance_cents": account.balance_cents}


def transfer_json(record: Transfer) -> Json:
    return {
        "id": record.id,
        "source_id": record.source_id,
        "target_id": record.target_id,
        "amount_cents": record.amount_cents,
    }


@bp.get("/accounts")
def list_accounts() -> Json:
    return {"accounts": [account_json(account) for account in ledger.list_accounts(db.session)]}


@bp.get("/accounts/<int:account_id>")
def get_account(account_id: int) -> Json | tuple[Json, int]:
    account = db.session.get(Account, account_id)
    if account is None:
        return {"error": f"no account with id {account_id}"}, 404
    return account_json(account)


@bp.post("/accounts")
def open_account() -> tuple[Json, int, dict[str, str]]:
    """Body: ``{"name": "Alice", "balance_cents": 10000}`` (balance optional)."""
    body = _body()
    account = ledger.open_account(
        db.session, _field(body, "name", str), _field(body, "balance_cents", int, default=0)
    )
    return account_json(account), 201, {"Location": url_for(".get_account", account_id=account.id)}


@bp.get("/transfers")
def list_transfers() -> Json:
    return {"transfers": [transfer_json(record) for record in ledger.recent_transfers(db.session, 100)]}


@bp.get("/transfers/<int:transfer_id>/receipt")
def get_receipt(transfer_id: int) -> Json | tuple[Json, int]:
    """The transfer's receipt, written by a background job after the
    transfer was committed; 404 until the job has run."""
    receipt = db.session.scalar(select(Receipt).where(Receipt.transfer_id == transfer_id))
    if receipt is None:
        return {"error": "no receipt (yet) for this transfer"}, 404
    return {"transfer_id": transfer_id, "text": receipt.text, "written_by": receipt.written_by}


@bp.post("/transfers")
def make_transfer() -> tuple[Json, int]:
    """Body: ``{"source_id": 1, "target_id": 2, "amount_cents": 1250}``.
    ``?fault=1`` crashes after the debit, to show that nothing is written."""
    body = _body()
    record = ledger.transfer(
        db.session,
        _field(body, "source_id", int),
        _field(body, "target_id", int),
        _field(body, "amount_cents", int),
        crash_after_debit=request.args.get("fault") == "1",
    )
    receipts.send_after_commit(record)
    return transfer_json(record), 201


@bp.errorhandler(ledger.LedgerError)
def refused(error: ledger.LedgerError) -> tuple[Json, int]:
    return {"error": str(error)}, 422


@bp.errorhandler(ledger.SimulatedCrash)
def crashed(error: ledger.SimulatedCrash) -> tuple[Json, int]:
    current_app.logger.warning("%s; the request's transaction is rolled back", error)
    return {"error": str(error), "written": "nothing: the request's transaction was rolled back"}, 500


@bp.errorhandler(HTTPException)
def http_error(error: HTTPException) -> tuple[Json, int]:
    return {"error": error.description or error.name}, error.code or 500


_MISSING = object()


def _body() -> Json:
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        abort(400, description="send a JSON object with Content-Type: application/json")
    return body


def _field(body: Json, name: str, kind: type, default: Any = _MISSING) -> Any:
    """``body[name]``, checked to be of ``kind`` (a bool is not an int here)."""
    value = body.get(name, default)
    if value is _MISSING:
        raise ledger.LedgerError(f"{name!r} is required")
    if not isinstance(value, kind) or isinstance(value, bool):
        raise ledger.LedgerError(f"{name!r} must be of type {kind.__name__}")
    return value
