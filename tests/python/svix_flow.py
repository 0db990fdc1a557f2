"""Drives a running hookline with the real `svix` Python SDK, as a Svix user would.

Run by the e2e test `svix_sdk` (crates/hookline/tests/e2e/svix_sdk.rs), which starts the
server and passes HOOKLINE_URL and HOOKLINE_TOKEN. Exits non-zero (with a traceback) on
the first failed assertion or on any response the SDK cannot parse.

Endpoint URLs point back at the hookline server under test, so nothing else is contacted.
"""

import base64
import os
import sys
from datetime import timedelta

from svix.api import (
    AppPortalAccessIn,
    ApplicationCreateOptions,
    ApplicationIn,
    ApplicationPatch,
    EndpointHeadersIn,
    EndpointHeadersPatchIn,
    EndpointIn,
    EndpointPatch,
    EndpointSecretRotateIn,
    EndpointUpsertIn,
    EventTypeIn,
    EventTypeListOptions,
    EventTypePatch,
    EventTypeUpsertIn,
    MessageCreateOptions,
    MessageGetOptions,
    MessageIn,
    MessageListOptions,
    Svix,
    SvixOptions,
)
from svix.exceptions import HttpError, HTTPValidationError

URL = os.environ["HOOKLINE_URL"].rstrip("/")
TOKEN = os.environ["HOOKLINE_TOKEN"]
# Deliveries (if any) go to the server under test itself, never elsewhere.
SINK = f"{URL}/svix-flow-sink"

# No client-side retries: a 5xx must fail the flow, not be papered over.
svix = Svix(TOKEN, SvixOptions(server_url=URL, retry_schedule=[]))
summary = []


def step(name):
    summary.append(name)
    print(f"-- {name}", flush=True)


def expect_http_error(status, fn, *args, **kwargs):
    try:
        fn(*args, **kwargs)
    except HttpError as e:
        assert e.status_code == status, f"expected HTTP {status}, got {e.status_code}: {e}"
        assert e.code, f"error without a code: {e}"
        return e
    raise AssertionError(f"expected HttpError {status}, call succeeded")


def new_whsec():
    return "whsec_" + base64.b64encode(os.urandom(32)).decode()


def applications():
    step("applications")
    app = svix.application.create(
        ApplicationIn(name="Acme", uid="acme", metadata={"plan": "pro"})
    )
    assert app.id.startswith("app_"), app.id
    assert app.uid == "acme" and app.name == "Acme"
    assert app.metadata == {"plan": "pro"}

    first = svix.application.get_or_create(ApplicationIn(name="Goc", uid="goc"))
    second = svix.application.get_or_create(ApplicationIn(name="Goc again", uid="goc"))
    assert first.id == second.id, (first.id, second.id)
    assert second.name == "Goc", "get_or_create must not change an existing app"

    assert svix.application.get(app.id).id == app.id
    assert svix.application.get("acme").id == app.id

    listed = svix.application.list()
    ids = [a.id for a in listed.data]
    assert app.id in ids and first.id in ids, ids
    assert listed.done

    # PUT on an existing app updates it; on an unknown uid it creates it.
    updated = svix.application.upsert(
        app.id, ApplicationIn(name="Acme Inc", uid="acme", metadata={"plan": "team"})
    )
    assert updated.id == app.id and updated.name == "Acme Inc"
    assert updated.metadata == {"plan": "team"}
    created = svix.application.upsert("upserted-app", ApplicationIn(name="Upserted"))
    assert created.id.startswith("app_") and created.uid == "upserted-app"
    again = svix.application.upsert("upserted-app", ApplicationIn(name="Upserted 2"))
    assert again.id == created.id and again.name == "Upserted 2"

    patched = svix.application.patch(app.id, ApplicationPatch(name="Acme Patched"))
    assert patched.name == "Acme Patched"
    assert patched.metadata == {"plan": "team"}, "PATCH must keep unsent fields"
    assert patched.uid == "acme"

    svix.application.delete(created.id)
    e = expect_http_error(404, svix.application.get, created.id)
    assert e.code == "not_found", e.code
    expect_http_error(404, svix.application.get, "upserted-app")

    # The SDK's idempotency-key option: a repeated key returns the first object.
    opts = ApplicationCreateOptions(idempotency_key="svix-flow-idem-1")
    one = svix.application.create(ApplicationIn(name="Idem"), opts)
    two = svix.application.create(ApplicationIn(name="Idem"), opts)
    assert one.id == two.id, (one.id, two.id)
    names = [a.name for a in svix.application.list().data]
    assert names.count("Idem") == 1, names
    return app


def event_types():
    step("event types")
    schema = {
        "1": {
            "type": "object",
            "properties": {"id": {"type": "string"}, "email": {"type": "string"}},
            "required": ["id"],
        }
    }
    et = svix.event_type.create(
        EventTypeIn(name="user.created", description="A user signed up", schemas=schema)
    )
    assert et.name == "user.created" and et.schemas == schema
    assert not et.archived and not et.deprecated
    svix.event_type.create(EventTypeIn(name="user.updated", description="A user changed"))
    svix.event_type.create(EventTypeIn(name="user.deleted", description="Going away"))

    got = svix.event_type.get("user.created")
    assert got.description == "A user signed up" and got.schemas == schema

    names = [e.name for e in svix.event_type.list().data]
    assert {"user.created", "user.updated", "user.deleted"} <= set(names), names

    upd = svix.event_type.upsert(
        "user.updated",
        EventTypeUpsertIn(description="A user changed profile", group_name="user"),
    )
    assert upd.description == "A user changed profile" and upd.group_name == "user"

    pat = svix.event_type.patch("user.updated", EventTypePatch(deprecated=True))
    assert pat.deprecated and pat.description == "A user changed profile"
    assert pat.group_name == "user"

    svix.event_type.delete("user.deleted")
    visible = [e.name for e in svix.event_type.list().data]
    assert "user.deleted" not in visible, visible
    everything = svix.event_type.list(EventTypeListOptions(include_archived=True)).data
    archived = [e for e in everything if e.name == "user.deleted"]
    assert len(archived) == 1 and archived[0].archived, everything
    assert svix.event_type.get("user.deleted").archived

    # Creating an existing event type conflicts; creating an archived one unarchives it
    # (as the SDK documents for `create`).
    expect_http_error(
        409, svix.event_type.create, EventTypeIn(name="user.created", description="again")
    )
    back = svix.event_type.create(
        EventTypeIn(name="user.deleted", description="Back again", schemas=schema)
    )
    assert not back.archived and back.description == "Back again", back
    assert back.schemas == schema
    visible = [e.name for e in svix.event_type.list().data]
    assert "user.deleted" in visible, visible


def endpoints(app):
    step("endpoints")
    ep = svix.endpoint.create(
        app.id,
        EndpointIn(
            url=f"{SINK}/1",
            description="primary",
            uid="primary",
            event_types=["user.created", "user.updated"],
            channels=["eu", "project-1"],
            metadata={"team": "a"},
        ),
    )
    assert ep.id.startswith("ep_"), ep.id
    assert ep.url == f"{SINK}/1" and ep.description == "primary"
    assert sorted(ep.event_types) == ["user.created", "user.updated"], ep.event_types
    assert sorted(ep.channels) == ["eu", "project-1"], ep.channels
    assert ep.metadata == {"team": "a"}

    assert svix.endpoint.get(app.id, ep.id).id == ep.id
    assert svix.endpoint.get(app.id, "primary").id == ep.id
    # Apps can be addressed by uid in endpoint paths too.
    assert svix.endpoint.get("acme", ep.id).id == ep.id

    other = svix.endpoint.create(app.id, EndpointIn(url=f"{SINK}/2"))
    assert other.event_types is None and other.channels is None
    listed = svix.endpoint.list(app.id)
    assert {e.id for e in listed.data} == {ep.id, other.id}, listed.data
    assert listed.done

    upd = svix.endpoint.upsert(
        app.id,
        ep.id,
        EndpointUpsertIn(
            url=f"{SINK}/1b",
            description="primary v2",
            uid="primary",
            event_types=["user.created"],
            channels=["eu"],
        ),
    )
    assert upd.id == ep.id and upd.url == f"{SINK}/1b" and upd.description == "primary v2"
    assert upd.event_types == ["user.created"] and upd.channels == ["eu"]

    pat = svix.endpoint.patch(app.id, ep.id, EndpointPatch(description="patched", disabled=True))
    assert pat.description == "patched" and pat.disabled is True
    assert pat.url == f"{SINK}/1b" and pat.event_types == ["user.created"]
    pat = svix.endpoint.patch(app.id, ep.id, EndpointPatch(disabled=False))
    assert pat.disabled is False

    # Secrets.
    secret = svix.endpoint.get_secret(app.id, ep.id).key
    assert secret.startswith("whsec_"), secret
    rotated = svix.endpoint.rotate_secret(app.id, ep.id, EndpointSecretRotateIn())
    assert rotated.key.startswith("whsec_") and rotated.key != secret
    assert svix.endpoint.get_secret(app.id, ep.id).key == rotated.key
    mine = new_whsec()
    rotated2 = svix.endpoint.rotate_secret(app.id, ep.id, EndpointSecretRotateIn(key=mine))
    assert rotated2.key == mine, (rotated2.key, mine)
    assert svix.endpoint.get_secret(app.id, ep.id).key == mine
    try:
        svix.endpoint.rotate_secret(app.id, ep.id, EndpointSecretRotateIn(key="not-a-secret"))
        raise AssertionError("a malformed key must be rejected")
    except HTTPValidationError as e:
        assert e.status_code == 422
        assert any("key" in d.loc for d in e.detail), e.detail
    assert svix.endpoint.get_secret(app.id, ep.id).key == mine

    # Custom headers.
    h = svix.endpoint.get_headers(app.id, ep.id)
    assert h.headers == {} and h.sensitive == [], h
    svix.endpoint.set_headers(
        app.id, ep.id, EndpointHeadersIn(headers={"X-Tenant": "acme", "X-Region": "eu"})
    )
    assert svix.endpoint.get_headers(app.id, ep.id).headers == {
        "X-Tenant": "acme",
        "X-Region": "eu",
    }
    svix.endpoint.patch_headers(
        app.id,
        ep.id,
        EndpointHeadersPatchIn(headers={"X-Extra": "1"}, delete_headers=["X-Region"]),
    )
    assert svix.endpoint.get_headers(app.id, ep.id).headers == {
        "X-Tenant": "acme",
        "X-Extra": "1",
    }

    # The SDK's validation error type, naming the field.
    try:
        svix.endpoint.create(app.id, EndpointIn(url="not a url"))
        raise AssertionError("a bad URL must be rejected")
    except HTTPValidationError as e:
        assert e.status_code == 422
        assert isinstance(e.detail, list) and e.detail, e.detail
        assert any(d.loc[-1] == "url" for d in e.detail), [d.loc for d in e.detail]
        assert all(d.msg and d.type for d in e.detail), e.detail

    # A secret given at creation is the one used; PUT on an unknown uid creates.
    given = new_whsec()
    third = svix.endpoint.create(app.id, EndpointIn(url=f"{SINK}/3", secret=given))
    assert svix.endpoint.get_secret(app.id, third.id).key == given
    made = svix.endpoint.upsert(app.id, "made-by-put", EndpointUpsertIn(url=f"{SINK}/4"))
    assert made.uid == "made-by-put" and made.id.startswith("ep_"), made
    assert svix.endpoint.get(app.id, "made-by-put").id == made.id
    svix.endpoint.delete(app.id, third.id)
    svix.endpoint.delete(app.id, "made-by-put")

    svix.endpoint.delete(app.id, other.id)
    expect_http_error(404, svix.endpoint.get, app.id, other.id)
    assert [e.id for e in svix.endpoint.list(app.id).data] == [ep.id]
    return ep


def messages(app):
    step("messages")
    full = MessageGetOptions(with_content=True)
    msg = svix.message.create(
        app.id,
        MessageIn(
            event_type="user.created",
            event_id="evt-1",
            payload={"id": "u1", "email": "a@example.com"},
            channels=["eu"],
        ),
        MessageCreateOptions(with_content=True),
    )
    assert msg.id.startswith("msg_"), msg.id
    assert msg.event_id == "evt-1" and msg.payload == {"id": "u1", "email": "a@example.com"}

    e = expect_http_error(
        409,
        svix.message.create,
        app.id,
        MessageIn(event_type="user.created", event_id="evt-1", payload={"id": "u1"}),
    )
    assert e.code == "conflict", e.code

    assert svix.message.get(app.id, msg.id, full).payload["email"] == "a@example.com"
    by_event = svix.message.get(app.id, "evt-1", full)
    assert by_event.id == msg.id and by_event.channels == ["eu"]

    idem = MessageCreateOptions(idempotency_key="svix-flow-msg-idem")
    m1 = svix.message.create(app.id, MessageIn(event_type="user.updated", payload={"n": 1}), idem)
    m2 = svix.message.create(app.id, MessageIn(event_type="user.updated", payload={"n": 1}), idem)
    assert m1.id == m2.id, (m1.id, m2.id)

    # A dedicated app for pagination, so the expected set is exact.
    pages_app = svix.application.create(ApplicationIn(name="Pages", uid="pages"))
    created = []
    for i in range(7):
        m = svix.message.create(
            pages_app.id,
            MessageIn(
                event_type="user.created" if i % 2 == 0 else "user.updated",
                payload={"i": i},
                channels=["eu"] if i % 3 == 0 else ["us"],
            ),
        )
        created.append(m.id)
    assert len(set(created)) == 7

    seen, pages, iterator = [], 0, None
    while True:
        page = svix.message.list(pages_app.id, MessageListOptions(limit=2, iterator=iterator))
        pages += 1
        assert len(page.data) <= 2, len(page.data)
        seen.extend(m.id for m in page.data)
        if page.done:
            break
        assert page.iterator, "a page that is not done must have an iterator"
        iterator = page.iterator
        assert pages < 20, "pagination does not end"
    assert pages >= 3, pages
    assert len(seen) == len(set(seen)), f"duplicates: {seen}"
    assert set(seen) == set(created), (sorted(seen), sorted(created))

    upd = svix.message.list(pages_app.id, MessageListOptions(event_types=["user.updated"]))
    assert {m.id for m in upd.data} == {created[i] for i in (1, 3, 5)}, upd.data
    assert all(m.event_type == "user.updated" for m in upd.data)
    both = svix.message.list(
        pages_app.id, MessageListOptions(event_types=["user.updated", "user.created"])
    )
    assert len(both.data) == 7
    eu = svix.message.list(pages_app.id, MessageListOptions(channel="eu", with_content=True))
    assert {m.id for m in eu.data} == {created[i] for i in (0, 3, 6)}, eu.data
    assert sorted(m.payload["i"] for m in eu.data) == [0, 3, 6]

    # Time filters, as the SDK sends them (ISO 8601 with an offset).
    stamps = {m.id: m.timestamp for m in both.data}
    first_ts = min(stamps.values())
    last_ts = max(stamps.values())
    after = svix.message.list(
        pages_app.id, MessageListOptions(after=first_ts - timedelta(seconds=1))
    )
    assert len(after.data) == 7, after.data
    none_after = svix.message.list(
        pages_app.id, MessageListOptions(after=last_ts + timedelta(seconds=1))
    )
    assert none_after.data == [] and none_after.done, none_after
    none_before = svix.message.list(
        pages_app.id, MessageListOptions(before=first_ts - timedelta(seconds=1))
    )
    assert none_before.data == [], none_before

    # `application` in MessageIn creates the app (path id as its uid) on first use.
    auto = svix.message.create(
        "auto-app",
        MessageIn(
            event_type="user.created",
            payload={"id": "u9"},
            application=ApplicationIn(name="Auto"),
        ),
    )
    auto_app = svix.application.get("auto-app")
    assert auto_app.name == "Auto" and auto_app.uid == "auto-app", auto_app
    assert svix.message.get("auto-app", auto.id).id == auto.id


def portal(app):
    step("app portal token")
    access = svix.authentication.app_portal_access(app.id, AppPortalAccessIn())
    assert access.url and access.token, access
    scoped = Svix(access.token, SvixOptions(server_url=URL, retry_schedule=[]))
    assert scoped.application.get(app.id).id == app.id
    assert [a.id for a in scoped.application.list().data] == [app.id]
    e = expect_http_error(403, scoped.application.create, ApplicationIn(name="Nope"))
    assert e.code == "forbidden", e.code
    expect_http_error(404, scoped.application.get, "pages")

    step("bad token and health")
    bad = Svix("not-a-token", SvixOptions(server_url=URL, retry_schedule=[]))
    expect_http_error(401, bad.application.list)
    bad.health.get()


def main():
    app = applications()
    event_types()
    endpoints(app)
    messages(app)
    portal(app)
    print(f"svix_flow: OK ({', '.join(summary)}) against {URL}")


if __name__ == "__main__":
    try:
        main()
    except HttpError as e:
        print(f"svix_flow: unexpected HttpError {e.status_code}: {e}", file=sys.stderr)
        raise
    except HTTPValidationError as e:
        print(f"svix_flow: unexpected HTTPValidationError {e.status_code}: {e}", file=sys.stderr)
        raise
