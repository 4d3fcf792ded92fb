"""Access drift: the release live on a cluster is the oracle of who may see what. Pure.

Before a cluster changes, every principal of an `access_drift` check asks each of its requests
of the live release (`baseline_probes`). For requests with a `read`, every principal then reads
every id any principal listed, up to `max_ids` sampled evenly (`baseline_reads`): the live
release's own allow/deny matrix. `record` keeps those answers as a `Baseline`, ids fingerprinted
with a per-run salt, never in clear. Every later round (after the rollout, in bake and watch,
and when a rollback is verified) asks the same questions (`round_probes`) as `Unchanged` probes
that `verdict.judge` compares with the baseline.

The ids to read again are kept in clear in memory only, for as long as the run's process lives:
a baseline read back from a journal (`from_json`) compares listings, and reads only the ids a
principal lists in that same round cannot be known, so after a resume reads are not repeated.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from wavegate.config.checks import (
    AccessDrift,
    DriftRequest,
    Probe,
    Request,
    Seen,
    Unchanged,
    fingerprint,
)
from wavegate.decide.verdict import Response, listed_ids

NOTHING_LIVE = "no baseline: nothing was live before this release"
NO_RUN = "no baseline: access drift compares a release with the one live before it, in a deploy"
LOST = "no baseline: the run resumed after this cluster changed, and its journal kept none"
TAKING = "the live release's answer, kept as the baseline"

Listing = tuple[str, str, str]  # (check, principal, request name)
Read = tuple[str, str, str, str]  # (check, principal, request name, the id's fingerprint)
Answered = tuple[Probe, Response]


@dataclass(frozen=True)
class Baseline:
    """What the live release showed each principal before one cluster changed."""

    drifts: tuple[AccessDrift, ...]
    version: str | None  # None: nothing was live, so there is nothing to compare
    salt: str
    listings: Mapping[Listing, Seen] = field(default_factory=dict)
    reads: Mapping[Read, bool] = field(default_factory=dict)  # served or refused
    targets: Mapping[tuple[str, str], tuple[str, ...]] = field(default_factory=dict)
    strict: bool = False  # verifying a rollback: no new grant is allowed, allow_new or not
    note: str = NOTHING_LIVE  # why there is nothing to compare, when `version` is None

    def for_rollback(self) -> Baseline:
        """The release before must show what it showed: allow_new speaks for the new one."""
        return dataclasses.replace(self, strict=True)

    def to_json(self) -> dict[str, Any]:
        """For the run's journal: fingerprints only, never an id (so no read targets)."""
        return {"version": self.version, "salt": self.salt, "note": self.note,
                "listings": [{"check": c, "principal": p, "request": r, "served": seen.served,
                              "ids": sorted(seen.ids)}
                             for (c, p, r), seen in sorted(self.listings.items())],
                "reads": [{"check": c, "principal": p, "request": r, "id": mark,
                           "served": served}
                          for (c, p, r, mark), served in sorted(self.reads.items())]}

    @classmethod
    def from_json(cls, data: Mapping[str, Any], drifts: tuple[AccessDrift, ...]) -> Baseline:
        listings = {(i["check"], i["principal"], i["request"]):
                    Seen(bool(i["served"]), frozenset(i["ids"])) for i in data["listings"]}
        reads = {(i["check"], i["principal"], i["request"], i["id"]): bool(i["served"])
                 for i in data["reads"]}
        return cls(drifts, data["version"], data["salt"], listings, reads,
                   note=data.get("note", NOTHING_LIVE))


def nothing_live(drifts: tuple[AccessDrift, ...], salt: str, *,
                 note: str = NOTHING_LIVE) -> Baseline:
    return Baseline(drifts, None, salt, note=note)


def baseline_probes(drifts: Iterable[AccessDrift]) -> tuple[Probe, ...]:
    """The listings to ask the live release, once each (a baseline is one answer per question)."""
    return tuple(_listing(drift, asked, who.name, before=None, note=TAKING, samples=1)
                 for drift in drifts for asked in drift.requests for who in drift.principals)


def read_targets(drifts: Iterable[AccessDrift],
                 answered: Iterable[Answered]) -> dict[tuple[str, str], tuple[str, ...]]:
    """Per (check, request) with a read: every id any principal listed, `max_ids` at most."""
    listed: dict[tuple[str, str], set[str]] = {}
    for probe, answer in answered:
        expectation = probe.expectation
        if isinstance(expectation, Unchanged) and expectation.ids and 200 <= answer.status < 300:
            ids = listed_ids(expectation.ids, answer.body)
            key = (probe.check, _name(probe))
            listed.setdefault(key, set()).update(ids if isinstance(ids, list) else ())
    return {(drift.check, asked.name): sample_evenly(sorted(listed.get((drift.check,
                                                                        asked.name), ())),
                                                     drift.max_ids)
            for drift in drifts for asked in drift.requests if asked.read is not None}


def sample_evenly(ids: Sequence[str], limit: int) -> tuple[str, ...]:
    """At most `limit` of `ids`, spread over the whole (sorted) list rather than its head."""
    if len(ids) <= limit:
        return tuple(ids)
    return tuple(ids[index * len(ids) // limit] for index in range(limit))


def baseline_reads(drifts: Iterable[AccessDrift],
                   targets: Mapping[tuple[str, str], tuple[str, ...]]) -> tuple[Probe, ...]:
    return tuple(_read(drift, asked, who.name, target, before=None, note=TAKING, samples=1)
                 for drift in drifts for asked in drift.requests if asked.read is not None
                 for target in targets.get((drift.check, asked.name), ())
                 for who in drift.principals)


def record(drifts: tuple[AccessDrift, ...], *, version: str, salt: str,
           listings: Iterable[Answered], targets: Mapping[tuple[str, str], tuple[str, ...]],
           reads: Iterable[Answered]) -> Baseline:
    """The baseline from the live release's answers (already judged readable)."""
    seen = {}
    for probe, answer in listings:
        expectation = probe.expectation
        assert isinstance(expectation, Unchanged) and expectation.ids is not None
        served = 200 <= answer.status < 300
        ids = listed_ids(expectation.ids, answer.body) if served else []
        seen[(probe.check, _who(probe), _name(probe))] = Seen(
            served, frozenset(fingerprint(salt, i) for i in ids if isinstance(ids, list)))
    read = {}
    for probe, answer in reads:
        expectation = probe.expectation
        assert isinstance(expectation, Unchanged) and expectation.target is not None
        key = (probe.check, _who(probe), _name(probe), fingerprint(salt, expectation.target))
        read[key] = 200 <= answer.status < 300
    return Baseline(drifts, version, salt, seen, read, dict(targets))


def round_probes(baseline: Baseline) -> tuple[Probe, ...]:
    """The probes a round sends for the baseline's checks, judged against it."""
    if baseline.version is None:
        return unbaselined(baseline.drifts, note=baseline.note)
    return _listings_against(baseline) + _reads_against(baseline)


def unbaselined(drifts: Iterable[AccessDrift], *, note: str = NO_RUN) -> tuple[Probe, ...]:
    """Without a baseline there is nothing to compare: the listings are asked (an error is
    still an error) and pass with `note`."""
    return tuple(_listing(drift, asked, who.name, before=None, note=note, samples=drift.samples)
                 for drift in drifts for asked in drift.requests for who in drift.principals)


def _listings_against(baseline: Baseline) -> tuple[Probe, ...]:
    probes = []
    for drift in baseline.drifts:
        for asked in drift.requests:
            for who in drift.principals:
                before = baseline.listings.get((drift.check, who.name, asked.name))
                probes.append(_listing(
                    drift, asked, who.name, before=before, baseline=baseline,
                    note=None if before else "no baseline for this request: it was added since",
                    samples=drift.samples))
    return tuple(probes)


def _reads_against(baseline: Baseline) -> tuple[Probe, ...]:
    probes = []
    for drift in baseline.drifts:
        for asked in drift.requests:
            for target in baseline.targets.get((drift.check, asked.name), ()):
                for who in drift.principals:
                    served = baseline.reads.get((drift.check, who.name, asked.name,
                                                 fingerprint(baseline.salt, target)))
                    if served is not None:
                        probes.append(_read(drift, asked, who.name, target,
                                            before=Seen(served), baseline=baseline,
                                            samples=drift.samples))
    return tuple(probes)


def _listing(drift: AccessDrift, asked: DriftRequest, who: str, *, before: Seen | None,
             samples: int, note: str | None = None, baseline: Baseline | None = None) -> Probe:
    expectation = _unchanged(drift, asked, who, before, baseline, ids=asked.ids, note=note)
    return _probe(drift, who, asked.request, expectation, samples)


def _read(drift: AccessDrift, asked: DriftRequest, who: str, target: str, *,
          before: Seen | None, samples: int, note: str | None = None,
          baseline: Baseline | None = None) -> Probe:
    assert asked.read is not None
    expectation = _unchanged(drift, asked, who, before, baseline, ids=None, note=note,
                             target=target)
    # The report names a read by its template: the id came from the release before.
    return _probe(drift, who, asked.read.with_id(target, shown=False), expectation, samples)


def _unchanged(drift: AccessDrift, asked: DriftRequest, who: str, before: Seen | None,
               baseline: Baseline | None, *, ids: str | None, note: str | None,
               target: str | None = None) -> Unchanged:
    # Built whole: a 1,000-cluster run builds some 100,000 of these, and a `replace` per
    # field set afterwards cost more than the rest of the probe.
    strict = baseline is None or baseline.strict
    return Unchanged(ids=ids, before=before, salt=baseline.salt if baseline else "",
                     version=baseline.version if baseline else None, note=note,
                     allow_new=frozenset() if strict else drift.allow_new.get(who, frozenset()),
                     target=target, asks=asked.name)


def _probe(drift: AccessDrift, who: str, request: Request, expectation: Unchanged,
           samples: int) -> Probe:
    principal = next(p for p in drift.principals if p.name == who)
    return Probe(check=drift.check, principal=principal, request=request,
                 expectation=expectation, severity="security", max_body=drift.max_body,
                 samples=samples)


def _who(probe: Probe) -> str:
    return probe.principal.name if probe.principal else ""


def _name(probe: Probe) -> str:
    assert isinstance(probe.expectation, Unchanged)
    return probe.expectation.asks
