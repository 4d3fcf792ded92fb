"""Decisions, as pure functions: what a run does next, whether a probe's answer passes, what a
ledger says is live, whether a workload has rolled out, where an interrupted run stands.

No I/O and no clock of their own: inputs in, a decision out, tested with tables of cases.
"""
