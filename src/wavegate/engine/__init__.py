"""The I/O around the decisions: the run loop, probes, restores, ledger writes, locks, webhooks.

Each module asks `wavegate.decide` what to do and reaches clusters only through the driver
seam (`wavegate.drivers.base.Driver`). The run's state changes in one place: the runner.
"""
