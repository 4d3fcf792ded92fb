"""The local fleet: clusters made of local processes on loopback, driven through files.

One agent process per cluster state folder plays node and deployment controller:

- `config`: agent.json and the layout of the state folder;
- `objects`: the manifests in objects/ (Deployments, Services, ConfigMaps, Secrets), the
  template hash, env resolution, image -> argv;
- `rolling`: the pure rolling-update decision (which pods to start and stop);
- `pods`: the process runner (spawn, probe, restart, stop), reusable by a node agent;
- `ingress`: the per-cluster reverse proxy;
- `status`: the shape of the status files, as pure functions;
- `agent`: the control loop and `python -m wavegate.localfleet.agent CLUSTER_DIR`;
- `supervisor`: start, find and stop an agent from another process.

Modules import only downward in that list (agent and supervisor on top). Standard library only,
plus `wavegate.filestore` for atomic JSON files.
"""
