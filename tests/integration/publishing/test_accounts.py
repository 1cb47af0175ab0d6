"""Connecting accounts: the OAuth state is single-use, bound to its tenant and person, and
expires; Bluesky's app password is never kept; the plan's account limit holds."""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from urllib.parse import urlsplit

from socialflow.db.session import unit_of_work
from socialflow.settings import Settings
from socialflow.social.credentials import open_sealed
from socialflow.vault.service import Vault
from tests.integration.held_transactions import open_api_transactions
from tests.integration.publishing.conftest import Studio
from tests.integration.social.fake_bluesky import FakePds
from tests.integration.social.fake_mastodon import FakeMastodon
from tests.integration.social.fake_receiver import FakeReceiver


async def _authorized(studio: Studio, instance: FakeMastodon) -> str:
    """The callback's query after the admin started the flow and approved on the instance."""
    started = await studio.client.post(
        f"{studio.base}/social-accounts/connect/mastodon",
        json={"instance_url": instance.origin},
        headers=studio.admin.headers,
    )
    assert started.status_code == 200, started.text
    back = instance.approve(started.json()["authorization_url"], instance.add_account("brand"))
    return urlsplit(back).query


async def test_an_oauth_state_completes_once(studio: Studio, instance: FakeMastodon) -> None:
    query = await _authorized(studio, instance)
    first = await studio.client.get(f"/api/v1/oauth/callback?{query}", headers=studio.admin.headers)
    assert first.status_code == 201, first.text
    again = await studio.client.get(f"/api/v1/oauth/callback?{query}", headers=studio.admin.headers)
    assert again.status_code == 400
    assert again.json()["type"].endswith("invalid-oauth-state")


async def test_an_oauth_state_is_refused_to_anyone_but_who_started_it(
    studio: Studio, instance: FakeMastodon
) -> None:
    query = await _authorized(studio, instance)
    other_admin = await studio.platform.member(studio.tenant, "admin")
    stolen = await studio.client.get(f"/api/v1/oauth/callback?{query}", headers=other_admin.headers)
    assert stolen.status_code == 400
    listed = await studio.client.get(f"{studio.base}/social-accounts", headers=studio.admin.headers)
    assert listed.json()["items"] == []
    mine = await studio.client.get(f"/api/v1/oauth/callback?{query}", headers=studio.admin.headers)
    assert mine.status_code == 201  # the stranger's attempt did not use it up


async def test_an_expired_oauth_state_is_refused(studio: Studio, instance: FakeMastodon) -> None:
    query = await _authorized(studio, instance)
    studio.pg.execute(
        "UPDATE shared.oauth_states SET expires_at = now() - interval '1 second' "
        "WHERE tenant_id = %s",
        (studio.tenant_id,),
    )
    late = await studio.client.get(f"/api/v1/oauth/callback?{query}", headers=studio.admin.headers)
    assert late.status_code == 400


async def test_only_the_states_sha256_is_stored(studio: Studio, instance: FakeMastodon) -> None:
    query = await _authorized(studio, instance)
    state = dict(part.split("=", 1) for part in query.split("&"))["state"]
    stored = studio.pg.execute("SELECT state_sha256 FROM shared.oauth_states").fetchall()
    assert all(state not in str(row[0]) for row in stored)


async def test_editors_may_not_connect_accounts(studio: Studio, instance: FakeMastodon) -> None:
    refused = await studio.client.post(
        f"{studio.base}/social-accounts/connect/mastodon",
        json={"instance_url": instance.origin},
        headers=studio.editor.headers,
    )
    assert refused.status_code == 403


async def test_a_wrong_app_password_is_a_clear_problem_and_connects_nothing(
    studio: Studio, pds: FakePds
) -> None:
    pds.add_account("brand.test", "the-right-one")
    answer = await studio.client.post(
        f"{studio.base}/social-accounts/connect/bluesky",
        json={"identifier": "brand.test", "app_password": "a-wrong-one", "service_url": pds.url},
        headers=studio.admin.headers,
    )
    assert answer.status_code == 422
    assert "a-wrong-one" not in answer.text
    listed = await studio.client.get(f"{studio.base}/social-accounts", headers=studio.admin.headers)
    assert listed.json()["items"] == []


async def test_the_app_password_is_never_stored(
    studio: Studio, pds: FakePds, worker_settings: Settings
) -> None:
    account = await studio.bluesky(pds)
    (sealed,) = studio.pg.execute(
        f'SELECT credentials FROM "{studio.tenant_schema}".social_accounts'
    ).fetchone() or (None,)
    assert isinstance(sealed, bytes)
    async with unit_of_work(studio.factory) as session:
        opened = await open_sealed(
            session,
            Vault.from_settings(worker_settings),
            studio.tenant_id,
            uuid.UUID(account["id"]),
            sealed,
        )
    assert opened.access_token  # the session's tokens are what is kept…
    assert "app-pass-1234" not in repr(dataclasses.astuple(opened))  # …never the password


async def test_the_plans_account_limit_is_held(studio: Studio, pds: FakePds) -> None:
    operator = await studio.platform.operator()
    await studio.platform.entitle(operator, studio.tenant, social_accounts=1)
    await studio.bluesky(pds, "one.test")
    pds.add_account("two.test", "app-pass-1234")
    refused = await studio.client.post(
        f"{studio.base}/social-accounts/connect/bluesky",
        json={"identifier": "two.test", "app_password": "app-pass-1234", "service_url": pds.url},
        headers=studio.admin.headers,
    )
    assert refused.status_code == 409
    assert refused.json()["type"].endswith("quota-exceeded")


async def test_no_transaction_is_held_while_a_platform_answers_a_connect(
    studio: Studio, instance: FakeMastodon, pds: FakePds, database_url: str
) -> None:
    held: dict[str, list[int]] = {"mastodon": [], "bluesky": []}
    instance.on_request = lambda _: held["mastodon"].append(open_api_transactions(database_url))
    pds.on_call = lambda _: held["bluesky"].append(open_api_transactions(database_url))

    query = await _authorized(studio, instance)  # registers the tenant's app on the instance
    registered = len(held["mastodon"])
    done = await studio.client.get(f"/api/v1/oauth/callback?{query}", headers=studio.admin.headers)
    assert done.status_code == 201, done.text
    await studio.bluesky(pds)

    # Each call the API made to a platform found none of its connections in a transaction: a
    # slow instance or PDS holds no pooled connection, nor any row lock, while it answers.
    assert registered >= 1
    assert len(held["mastodon"]) > registered  # and the callback's code exchange
    assert held["bluesky"]
    assert set(held["mastodon"]) | set(held["bluesky"]) == {0}


async def test_two_callbacks_racing_with_one_state_connect_once(
    studio: Studio, instance: FakeMastodon
) -> None:
    query = await _authorized(studio, instance)
    answers = await asyncio.gather(
        *(
            studio.client.get(f"/api/v1/oauth/callback?{query}", headers=studio.admin.headers)
            for _ in range(2)
        )
    )
    assert sorted(a.status_code for a in answers)[0] == 201
    assert [a.status_code for a in answers].count(201) == 1
    listed = await studio.client.get(f"{studio.base}/social-accounts", headers=studio.admin.headers)
    assert len(listed.json()["items"]) == 1
    left = studio.pg.execute(
        "SELECT count(*) FROM shared.oauth_states WHERE tenant_id = %s", (studio.tenant_id,)
    )
    assert left.fetchone() == (0,)  # taken


async def test_a_webhook_destinations_url_is_shown_by_its_origin_only(
    studio: Studio, receiver: FakeReceiver
) -> None:
    """A Slack- or Zapier-style hook carries its token in the path or query: lists, posts,
    events and the audit log show the origin; the whole URL is only what is called."""
    tokened = f"{receiver.url}/T0123/B0456/sekretTOKEN?key=alsoSEKRET"
    connected = await studio.client.post(
        f"{studio.base}/social-accounts/connect/webhook",
        json={"url": tokened},
        headers=studio.admin.headers,
    )
    assert connected.status_code == 201, connected.text
    origin = f"http://{receiver.host}:{receiver.port}"
    account = connected.json()
    assert (account["server_url"], account["handle"]) == (origin, origin)
    receiver.secret = account["signing_secret"]

    post = await studio.approved(text="hello", destinations=[{"account_id": account["id"]}])
    assert (await studio.call("POST", f"/{post['id']}/publish")).status_code == 200
    await studio.run_engine()
    (delivery,) = receiver.deliveries
    assert delivery.path == "/hooks/socialflow/T0123/B0456/sekretTOKEN?key=alsoSEKRET"
    published = await studio.post(post["id"])
    assert published["destinations"][0]["handle"] == origin

    # One connected before handles were made from the origin kept the whole URL as its handle.
    studio.pg.execute(
        f'UPDATE "{studio.tenant_schema}".social_accounts SET handle = server_url WHERE id = %s',
        (account["id"],),
    )
    accounts = f"{studio.base}/social-accounts"
    shown = [
        (await studio.client.get(accounts, headers=studio.admin.headers)).text,
        (await studio.client.get(f"{accounts}/{account['id']}", headers=studio.admin.headers)).text,
        (await studio.call("GET", f"/{post['id']}")).text,
    ]
    gone = await studio.client.delete(f"{accounts}/{account['id']}", headers=studio.admin.headers)
    assert gone.status_code == 204
    events = studio.pg.execute(
        "SELECT payload::text FROM shared.outbox WHERE tenant = %s", (studio.tenant,)
    ).fetchall()
    audited = studio.pg.execute(
        "SELECT coalesce(before::text, '') || coalesce(after::text, '') "
        f'FROM "{studio.tenant_schema}".audit_log'
    ).fetchall()
    for text in [connected.text, *shown, *(r[0] for r in events), *(r[0] for r in audited)]:
        assert "sekret" not in text.lower(), text


async def test_a_tenant_suspended_while_the_platform_answers_keeps_no_account(
    studio: Studio, pds: FakePds
) -> None:
    """The platform is called with no transaction open; what comes back is kept only if the
    caller may still connect accounts there, read again as a new request would."""
    pds.add_account("brand.test", "app-pass-1234")

    def suspend(nsid: str) -> None:  # mid sign-in
        if nsid == "com.atproto.server.createSession":
            studio.pg.execute(
                "UPDATE shared.tenants SET status = 'suspended' WHERE id = %s", (studio.tenant_id,)
            )

    pds.on_call = suspend
    answer = await studio.client.post(
        f"{studio.base}/social-accounts/connect/bluesky",
        json={"identifier": "brand.test", "app_password": "app-pass-1234", "service_url": pds.url},
        headers=studio.admin.headers,
    )
    assert answer.status_code == 403, answer.text
    assert answer.json()["type"].endswith("tenant-suspended")
    kept = studio.pg.execute(f'SELECT count(*) FROM "{studio.tenant_schema}".social_accounts')
    assert kept.fetchone() == (0,)
