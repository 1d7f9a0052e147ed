"""The CloudEvents 1.0 envelope, structured JSON mode (one JSON document per message).

A pydantic model of the spec's attributes rather than the `cloudevents` SDK: the
SDK adds an HTTP/Kafka binding layer settleflow does not use, and this model is
what the JSON Schema tests and the consumers validate against.

Required context attributes: specversion, id, source, type. Optional ones used:
subject, time, datacontenttype. Extension attributes (lower-case letters and
digits only, as the spec demands): correlationid, causationid, aggregatetype,
aggregateversion.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

CONTENT_TYPE = "application/cloudevents+json"


class CloudEvent(BaseModel):
    model_config = ConfigDict(frozen=True, extra="allow")  # unknown extensions are kept, not refused

    specversion: Literal["1.0"] = "1.0"
    id: str = Field(min_length=1)  # the outbox event id: unique per source, the dedupe key everywhere
    source: str = Field(min_length=1)  # settleflow/<owner>
    type: str = Field(min_length=1)  # settleflow.<owner>.<event>.v<N>
    subject: str  # the aggregate id (an order id for billing's and payments' events)
    time: datetime  # when the fact happened (the deciding command's issued_at)
    datacontenttype: Literal["application/json"] = "application/json"
    correlationid: str  # one business transaction (an order's flows share it)
    causationid: str  # the command that caused the fact
    aggregatetype: str  # orders, payments, fraud_reviews, shipments, invoices
    aggregateversion: int  # the aggregate's version after the change; consumers drop older ones
    data: dict[str, Any]

    @field_validator("time")
    @classmethod
    def _aware(cls, value: datetime) -> datetime:
        if value.tzinfo is None:
            raise ValueError("time must carry a time zone (RFC 3339)")
        return value

    def to_json(self) -> bytes:
        return self.model_dump_json().encode()

    @classmethod
    def from_json(cls, raw: bytes | str) -> CloudEvent:
        return cls.model_validate_json(raw)
