"""Reporting: a read-only read model of refunds and payments, fed only from the stream.

It knows settleflow only through integration/ (the public contracts and the
stream); it never reads settleflow's tables and never sends a command.
"""
