"""A delivery whose outcome the platform never confirmed (`unconfirmed`) is decided by a person
who looked there: published (with its address), not published, or sent again. The decision is
audited, the post's state follows, and a lookup still scheduled then changes nothing."""

from __future__ import annotations

from typing import Any

from tests.integration.publishing.conftest import Studio
from tests.integration.social.fake_mastodon import FakeMastodon


async def _unconfirmed(studio: Studio, instance: FakeMastodon) -> tuple[str, str]:
    """A post whose one delivery reached Mastodon but never heard back: its id and the
    destination's."""
    account = await studio.mastodon(instance)
    instance.set_mode("drop_after_accept", times=1)
    post = await studio.approved(text="did it go?", destinations=[{"account_id": account["id"]}])
    assert (await studio.call("POST", f"/{post['id']}/publish")).status_code == 200
    await studio.run_engine()
    after = await studio.post(post["id"])
    assert after["status"] == "unconfirmed"
    return post["id"], after["destinations"][0]["id"]


async def _resolve(studio: Studio, post_id: str, destination_id: str, **body: Any) -> Any:
    return await studio.call(
        "POST", f"/{post_id}/destinations/{destination_id}/resolve", studio.admin, **body
    )


def _audited(studio: Studio, action: str) -> list[tuple[Any, ...]]:
    return studio.pg.execute(
        f'SELECT actor, after FROM "{studio.tenant_schema}".audit_log WHERE action = %s',
        (action,),
    ).fetchall()


async def test_a_person_who_found_it_published_settles_it_with_its_address(
    studio: Studio, instance: FakeMastodon
) -> None:
    post_id, destination_id = await _unconfirmed(studio, instance)
    url = "https://mastodon.example/@brand/1234"
    answer = await _resolve(
        studio, post_id, destination_id, outcome="published", url=url, note="seen it"
    )
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["status"] == "published"
    (destination,) = body["destinations"]
    assert (destination["state"], destination["url"]) == ("published", url)
    assert destination["platform_post_id"] is None  # not given: not invented
    [(actor, after)] = _audited(studio, "post.destination_resolved")
    assert actor.startswith("user:")
    assert after["outcome"] == "published"
    assert after["note"] == "seen it"
    assert [e["url"] for e in studio.events("post.destination_published")] == [url]
    # The lookup scheduled before the decision comes due: it finds the delivery settled.
    await studio.run_engine_later(3600)
    again = await studio.post(post_id)
    assert again["destinations"][0]["url"] == url
    assert instance.statuses_created == 1


async def test_not_published_fails_the_delivery_and_the_post(
    studio: Studio, instance: FakeMastodon
) -> None:
    post_id, destination_id = await _unconfirmed(studio, instance)
    answer = await _resolve(studio, post_id, destination_id, outcome="not_published")
    assert answer.status_code == 200, answer.text
    assert answer.json()["status"] == "failed"
    (destination,) = answer.json()["destinations"]
    assert (destination["state"], destination["error_kind"]) == ("failed", "not_published")
    assert [e["type"] for e in studio.events("post.failed")] == ["post.failed"]


async def test_send_again_makes_one_more_attempt_now(
    studio: Studio, instance: FakeMastodon
) -> None:
    post_id, destination_id = await _unconfirmed(studio, instance)
    answer = await _resolve(studio, post_id, destination_id, outcome="send_again")
    assert answer.status_code == 200, answer.text
    assert answer.json()["status"] == "publishing"
    assert answer.json()["destinations"][0]["state"] == "retrying"
    await studio.run_engine()
    after = await studio.post(post_id)
    assert after["status"] == "published"
    assert after["destinations"][0]["attempts"] == 2
    # The same Idempotency-Key: the instance answers with the status it had made.
    assert instance.statuses_created == 1


async def test_only_an_unconfirmed_delivery_is_resolved_and_bad_input_changes_nothing(
    studio: Studio, instance: FakeMastodon
) -> None:
    post_id, destination_id = await _unconfirmed(studio, instance)
    refused = [
        await _resolve(studio, post_id, destination_id, outcome="published"),  # no url
        await _resolve(
            studio, post_id, destination_id, outcome="not_published", url="https://x.example/1"
        ),
        await _resolve(studio, post_id, destination_id, outcome="deleted"),
        await _resolve(
            studio, post_id, destination_id, outcome="published", url="javascript:alert(1)"
        ),
        await _resolve(studio, post_id, destination_id, outcome="published", url="https:///etc"),
        await _resolve(studio, post_id, destination_id, outcome="published", url="https://a\n"),
        await _resolve(
            studio, post_id, destination_id, outcome="published", url='https://x"><img src=x>'
        ),
        await _resolve(
            studio,
            post_id,
            destination_id,
            outcome="published",
            url="https://x.example/1",
            platform_post_id="1\n",
        ),
    ]
    assert [r.status_code for r in refused] == [422, 422, 400, 400, 422, 422, 400, 422]
    editor = await studio.call(
        "POST",
        f"/{post_id}/destinations/{destination_id}/resolve",
        studio.editor,
        outcome="not_published",
    )
    assert editor.status_code == 403  # publishers decide, as they connect accounts
    missing = await _resolve(
        studio, post_id, "00000000-0000-0000-0000-000000000000", outcome="not_published"
    )
    assert missing.status_code == 404
    assert (await studio.post(post_id))["status"] == "unconfirmed"  # nothing changed
    assert _audited(studio, "post.destination_resolved") == []

    done = await _resolve(studio, post_id, destination_id, outcome="not_published")
    assert done.status_code == 200
    twice = await _resolve(studio, post_id, destination_id, outcome="send_again")
    assert twice.status_code == 409
    assert twice.json()["state_now"] == "failed"


async def test_send_again_is_refused_once_the_attempts_are_spent(
    studio: Studio, instance: FakeMastodon
) -> None:
    post_id, destination_id = await _unconfirmed(studio, instance)
    studio.pg.execute(
        f'UPDATE "{studio.tenant_schema}".post_destinations SET attempts = 6 WHERE id = %s',
        (destination_id,),
    )
    refused = await _resolve(studio, post_id, destination_id, outcome="send_again")
    assert refused.status_code == 409
    assert refused.json()["type"].endswith("attempts-spent")
    assert (await studio.post(post_id))["destinations"][0]["state"] == "unconfirmed"
