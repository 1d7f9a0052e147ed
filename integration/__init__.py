"""settleflow's public integration events: what other bounded contexts may rely on.

Domain events stay inside settleflow; the facts other teams need leave as the
versioned contracts of `contracts.py`, translated by the one table in
`translation.py`, wrapped in the CloudEvents envelope of `envelope.py` and sent
to the NATS JetStream stream described in `stream.py`. The JSON Schemas of every
published version live in `schemas/` and a test guards their compatibility.
"""
