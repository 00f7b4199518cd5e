"""kill -9 during a burst of writes: nothing acknowledged is lost, nothing refused appears.

For each of the outbox relay, the records service and the broker: 150 FHIR
creates go through the gateway, six at a time. The first 60 are queued; after 30
answers the process is killed with SIGKILL while writes are in flight; 30 more
are sent during the outage; the process is started again and the last 60
follow. Then the chart must hold every committed write exactly once and none
that was refused.
"""

from __future__ import annotations

import time
from collections import Counter

import httpx
import pytest

from ehr_events.devplatform import Platform

from . import builders
from .burst import Fault, plan, run_burst, settle
from .fhirclient import FHIR_JSON, given_name, search_patients, wait_until

pytestmark = pytest.mark.e2e

WRITES = 150
#: Longest the chart may take to catch up after the repair (relays and
#: projectors back off up to 5 s between retries; a refilled broker replays all).
CATCH_UP_SECONDS = 90


@pytest.mark.parametrize("target", ["records-relay", "records", "broker"])
def test_after_kill_9_every_acknowledged_write_is_in_the_chart_exactly_once(
    platform: Platform, client: httpx.Client, physician: dict[str, str], target: str
) -> None:
    family = builders.family_name("Kill")
    # a patient registered before the burst, whose MRN some writes of the burst reuse
    anchor_mrn = builders.mrn(family, 9999)
    anchor = client.post(
        "/fhir/Patient",
        json=builders.patient(family, "Anchor", mrn=anchor_mrn),
        headers={**physician, "Content-Type": FHIR_JSON},
    )
    assert anchor.status_code == 201, anchor.text
    writes = plan(family, WRITES, taken_mrn=anchor_mrn)

    # the burst, with the target killed in its middle and started again
    start = time.monotonic()
    outcomes = run_burst(
        platform.gateway_url,
        physician,
        writes,
        Fault(inject=lambda: platform.kill(target), recover=lambda: platform.start(target)),
    )
    burst_seconds = time.monotonic() - start
    statuses = Counter(o.status for o in outcomes)
    assert len(outcomes) == WRITES

    # a failure is a clean refusal, a 503 (not done) or a 504 (outcome unknown), never 500 or 502
    assert set(statuses) <= {201, 409, 422, 503, 504, None}, statuses
    for outcome in outcomes:
        if outcome.write.kind == "new":
            assert outcome.status not in (409, 422), (outcome.write.index, outcome.status)
        else:
            refusal = 422 if outcome.write.kind == "unborn" else 409
            assert outcome.status != 201 and (outcome.unknown or outcome.status == refusal)
    if target == "records":
        # the writes sent while the service was down could not be taken
        assert sum(o.unknown for o in outcomes) >= 30, statuses
    else:
        # the write side was up all along: the outbox holds what could not be relayed
        assert all(o.acknowledged for o in outcomes if o.write.kind == "new"), statuses

    # every unknown outcome is made definite, as a client would: by sending it again
    settled = settle(client, physician, outcomes)
    committed = settled.committed
    expected = Counter(["Anchor"] + [o.write.given for o in outcomes if committed[o.write.index]])
    refused = {o.write.given for o in outcomes if not committed[o.write.index]}

    # the chart catches up with every committed write
    start = time.monotonic()
    found = wait_until(
        lambda: search_patients(client, physician, family),
        lambda resources: set(expected) <= {given_name(r) for r in resources},
        timeout=CATCH_UP_SECONDS,
        what=f"the chart holding all {len(expected)} committed writes after killing {target}",
    )
    catch_up_seconds = time.monotonic() - start
    time.sleep(1)  # anything the stream still carried would now be in the chart
    found = search_patients(client, physician, family)

    # exactly once each, nothing refused, and each acknowledged write under its own id
    assert Counter(given_name(r) for r in found) == expected
    assert not refused & {given_name(r) for r in found}
    assert len({r["id"] for r in found}) == len(found)
    ids = {given_name(r): r["id"] for r in found}
    for outcome in outcomes:
        if outcome.acknowledged:
            assert ids[outcome.write.given] == outcome.patient_id, outcome.write.index
    by_mrn = {r["identifier"][0]["value"]: given_name(r) for r in found}
    assert by_mrn[anchor_mrn] == "Anchor"
    print(
        f"{target}: burst {burst_seconds:.1f}s {dict(statuses)}, "
        f"retries of unknown outcomes {dict(settled.retries)}, "
        f"chart caught up in {catch_up_seconds:.1f}s"
    )
