"""The HTML pages: the accounts, a form to open an account, a form to make a
transfer.

No view commits or rolls back anything. A redirect after a successful POST is
a 303, so the extension commits before the browser follows it; a form with
an error comes back as a 422, so the extension rolls back whatever the view
had already written.
"""

from __future__ import annotations

from flask import Blueprint, current_app, redirect, render_template, request, url_for
from werkzeug.wrappers import Response

from . import ledger, receipts
from .extensions import db
from .models import Account, Transfer

bp = Blueprint("ledger", __name__)

Page = str | tuple[str, int]


@bp.get("/")
def index() -> str:
    """The accounts with their balances, the latest transfers, and a note on
    what the previous POST committed, if anything."""
    session = db.session
    accounts = ledger.list_accounts(session)
    opened_id = request.args.get("account", type=int)
    transfer_id = request.args.get("transfer", type=int)
    opened = None if opened_id is None else session.get(Account, opened_id)
    transferred = None if transfer_id is None else session.get(Transfer, transfer_id)
    return render_template(
        "index.html",
        accounts=accounts,
        total=sum(account.balance_cents for account in accounts),
        transfers=ledger.recent_transfers(session),
        opened=opened,
        transferred=transferred,
    )


@bp.route("/accounts/new", methods=["GET", "POST"])
def new_account() -> Page | Response:
    """Open an account with an opening balance."""
    if request.method == "GET":
        return render_template("account_form.html", form={})
    form = request.form
    try:
        balance = ledger.parse_amount(form.get("balance", "") or "0")
        account = ledger.open_account(db.session, form.get("name", ""), balance)
    except ledger.LedgerError as error:
        return render_template("account_form.html", form=form, error=str(error)), 422
    return redirect(url_for(".index", account=account.id), 303)


@bp.route("/transfers/new", methods=["GET", "POST"])
def new_transfer() -> Page | Response:
    """Move money between two accounts.

    On "insufficient funds" both balances have already been changed and sent
    to the database when the error is found; the view does not undo them. The
    422 status is enough: the extension rolls the request's transaction back.
    """
    session = db.session
    if request.method == "GET":
        return render_template("transfer_form.html", accounts=ledger.list_accounts(session), form={})
    form = request.form
    try:
        source_id = _account_id(form.get("source"))
        target_id = _account_id(form.get("target"))
        amount = ledger.parse_amount(form.get("amount", ""))
        record = ledger.transfer(session, source_id, target_id, amount, crash_after_debit="crash" in form)
    except ledger.LedgerError as error:
        page = render_template(
            "transfer_form.html",
            accounts=ledger.list_accounts(session),
            form=form,
            error=str(error),
            written_before_error=isinstance(error, ledger.InsufficientFunds),
        )
        return page, 422
    receipts.send_after_commit(record)
    return redirect(url_for(".index", transfer=record.id), 303)


@bp.errorhandler(ledger.SimulatedCrash)
def crashed(error: ledger.SimulatedCrash) -> tuple[str, int]:
    """The page for the simulated crash: a 500, so nothing is committed."""
    current_app.logger.warning("%s; the request's transaction is rolled back", error)
    return render_template("crash.html", message=str(error)), 500


def _account_id(value: str | None) -> int:
    try:
        return int(value or "")
    except ValueError:
        raise ledger.LedgerError("Pick an account from the list.") from None
