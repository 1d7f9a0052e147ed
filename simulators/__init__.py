"""Stand-ins for the outside world that run as their own processes (not settleflow's code).

`simulators.stripe_sim` serves the part of Stripe's REST API that the payments
adapter uses; `simulators.control` holds the helpers tests, chaos and bench use to
read its ledger and turn its knobs.
"""
