"""Pure helpers of the Kubernetes driver: what the driver decides, apart from how it talks.

    kubeconfig    which kubeconfig a cluster uses, and which of its values are secrets
    kinds         which resources wavegate manages, their API paths, apply and delete order
    normalize     manifests made fit for server-side apply (the v1.20 `protocol` quirk)
    apierrors     API failures classified and put into one line a user can act on
    retry         the named retry policies of API calls
    ledgersecret  a ledger record and its release as a Secret of type wavegate.dev/release
    lease         the app's lock as a coordination.k8s.io/v1 Lease: bodies, expiry, who takes it
    rollout       whether a workload has rolled out, and whether one of its new pods crashes

Nothing here does I/O or imports the `kubernetes` client (only `wavegate.drivers.kubernetes`
does), nor anything of `wavegate.drivers`: every decision here is tested with plain dicts.
"""
