"""wavegate: multi-cluster deploy and rollback orchestrator with authorization smoke checks."""

__version__ = "0.1.0"
