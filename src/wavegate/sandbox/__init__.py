"""The kube sandbox: real Kubernetes control planes on loopback, for e2e tests and fleets."""
