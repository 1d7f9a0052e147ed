"""Every process manager the `flows` task queue runs."""

from workflows.payment import PaymentWorkflow
from workflows.process import FLOWS_QUEUE, SEARCH_ATTRIBUTES
from workflows.reconciliation import ReconciliationWorkflow, ResolveDiscrepancyWorkflow
from workflows.refund import RefundWorkflow
from workflows.shipping import ConfirmDeliveryWorkflow, ShipOrderWorkflow

WORKFLOWS = [RefundWorkflow, PaymentWorkflow, ShipOrderWorkflow, ConfirmDeliveryWorkflow, ReconciliationWorkflow,
             ResolveDiscrepancyWorkflow]

__all__ = ["WORKFLOWS", "FLOWS_QUEUE", "SEARCH_ATTRIBUTES"]
