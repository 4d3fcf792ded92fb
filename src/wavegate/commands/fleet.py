"""`wavegate fleet up|down|status`: the embedded local fleet, or the kube sandbox (`--kube`)."""

from __future__ import annotations

import json
from pathlib import Path

import click

from wavegate.commands.common import fleet_option, load_fleet, output_option
from wavegate.engine import local_fleet as fleetctl
from wavegate.errors import InputError

kube_option = click.option("--kube", is_flag=True,
                           help="Real Kubernetes control planes (the kube sandbox) instead.")
dir_option = click.option("--dir", "sandbox_dir", type=click.Path(path_type=Path),
                          default=Path(".wavegate/kube"), show_default=True,
                          help="Where the kube sandbox keeps its state, kubeconfig, fleet.yaml.")


@click.group()
def fleet() -> None:
    """The embedded local fleet: up, down, status."""


@fleet.command("up")
@fleet_option
@kube_option
@dir_option
@click.option("--rbac", "rbac", type=click.Path(path_type=Path), default=None,
              help="With --kube: the deployer's RBAC file (default: the role wavegate ships).")
def up(fleet_path: Path | None, kube: bool, sandbox_dir: Path, rbac: Path | None) -> int:
    """Start the fleet's clusters in the background; print their endpoints."""
    if rbac is not None and not kube:
        raise InputError("--rbac is for the kube sandbox: add --kube")
    if kube:
        from wavegate.sandbox import kubefleet  # the kubernetes client only when asked

        endpoints = kubefleet.up(load_fleet(fleet_path), sandbox_dir, rbac=rbac)
        for name, endpoint in endpoints.items():
            click.echo(f"{name:<10} {endpoint}")
        click.echo(f"kubeconfig: {sandbox_dir / 'kubeconfig'}\n"
                   f"deploy with: wavegate deploy APP --version V -f {sandbox_dir / 'fleet.yaml'}")
        return 0
    for row in fleetctl.up(load_fleet(fleet_path)):
        click.echo(f"{row['cluster']:<10} {row['region']:<14} {row['endpoint']}")
    return 0


@fleet.command("down")
@fleet_option
@kube_option
@dir_option
def down(fleet_path: Path | None, kube: bool, sandbox_dir: Path) -> int:
    """Stop every process the fleet started."""
    if kube:
        from wavegate.sandbox import kubefleet

        kubefleet.down(sandbox_dir)
        click.echo(f"stopped the kube sandbox in {sandbox_dir}")
        return 0
    stopped = fleetctl.down(load_fleet(fleet_path))
    click.echo(f"stopped {', '.join(stopped)}")
    return 0


@fleet.command("status")
@fleet_option
@output_option
def status(fleet_path: Path | None, output: str) -> int:
    """Which local clusters run, and where."""
    rows = fleetctl.status(load_fleet(fleet_path))
    if output == "json":
        click.echo(json.dumps({"clusters": rows}, indent=2))
        return 0
    for row in rows:
        state = f"up    {row['endpoint']}" if row["running"] else "down"
        click.echo(f"{row['cluster']:<10} {row['region']:<14} {state}")
    return 0
