"""Invoicing's activities."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from temporalio import activity

from activities.handling import decide
from domain.contracts import Outcome
from domain.invoicing.commands import CreateInvoice, CreditInvoice
from domain.invoicing.invoice import Invoice


class InvoicingActivities:
    def __init__(self, uow_factory: Callable[[], Any]) -> None:
        self.uow = uow_factory

    @activity.defn(name=CreateInvoice.activity_name())
    def create_invoice(self, command: CreateInvoice) -> Outcome:
        return decide(
            self.uow,
            command,
            lambda uow: uow.invoices.add(Invoice.create(command, uow.invoices.for_order(command.order_id))),
        )

    @activity.defn(name=CreditInvoice.activity_name())
    def credit_invoice(self, command: CreditInvoice) -> Outcome:
        return decide(self.uow, command, lambda uow: Invoice.credit_of(uow.invoices.for_order(command.order_id), command))
