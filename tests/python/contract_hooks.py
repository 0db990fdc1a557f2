"""Schemathesis hooks for hookline's contract test (e2e `contract::`), loaded through
SCHEMATHESIS_HOOKS.

hookline's OpenAPI document states every rule the server enforces, and JSON Schema
expresses most of them (ranges, lengths, patterns, enums). What it cannot express are
rules across fields, against the server's clock or against stored data; the document
states those in the fields' descriptions. A request schemathesis generated as
"schema-valid" may break one of them, and the server then answers 422 naming the field
and the rule. Such a refusal, and only such a one, is excused here: a positive-data
failure whose answer is a 422 where every error is one of the RULES below. Anything else
(an undocumented status, a wrong response shape, a 5xx, an accepted invalid request, a
422 for any other reason) still fails the run.

One stateful finding is excused too: an event type still readable after DELETE, which
archives it (`archived: true`) as Svix does, unless `expunge=true`.

Every excused failure is counted per rule and printed when the run ends, so a run shows
what it excused.
"""

import atexit
import collections
import re
import sys

import schemathesis

# (rule, the error's field path as "a.b.c" (a regex), its message (a regex)).
RULES = [
    (
        "integers are whole numbers: 62.0 is refused (the document says so; JSON Schema "
        "cannot tell 62.0 from 62)",
        r"body(\..*)?|query\..*",
        r"^invalid type: floating point `",
    ),
    (
        "date-times are RFC 3339 (`format: date-time`; the coverage phase takes formats "
        "as annotations and sends other strings)",
        r"body\.(deliverAt|since|until)|query\.(before|after|since|until)",
        r"premature end of input|input contains invalid characters|input is out of range"
        r"|trailing input|input is not enough|no possible date and time|bad or unsupported format",
    ),
    (
        "retryPolicy: maxIntervalSeconds and giveUpAfterSeconds at least initialSeconds or "
        "intervalSeconds, and at most 1000 attempts",
        r"body(\.application)?\.retryPolicy\.(maxIntervalSeconds|giveUpAfterSeconds|intervalSeconds)",
        r"^must be between \d+ and \d+ seconds|more than 1000 delivery attempts",
    ),
    (
        "a secret must fit the endpoint's signature scheme (whsec_ for standard, whsk_ for "
        "ed25519, 8 to 512 visible ASCII for hmac-sha256-hex) and be new on rotation",
        r"body\.(secret|key|signature\.scheme)",
        r"^is a whsec_ \(HMAC\) secret, but|^is a whsk_ ed25519 key pair|^must be 8 to 512 visible ASCII"
        r"|^must be 'whsec_'|^must be 'whsk_'|^the endpoint's (current )?secret|^is already one of this endpoint's secrets",
    ),
    (
        "header names are case-insensitive: no two may differ only in case, and none may "
        "be the hmac-sha256-hex signature header",
        r"body\.headers\..*",
        r"^is the same header as|^is set by hookline and cannot be overridden",
    ),
    (
        "recover: since not in the future of the server's clock, until after since",
        r"body\.(since|until)",
        r"^must not be in the future$|^must be after since$",
    ),
    (
        "attempt statistics: until after since, a window of at most 31 days and 2000 buckets",
        r"query\.(since|until|bucket_seconds)",
        r"^must be after since$|^the window must be at most 31 days$|^too many buckets for the window",
    ),
    (
        "deliverAt at most 30 days ahead of the server's clock",
        r"body\.deliverAt",
        r"^must be at most 30 days in the future$",
    ),
    (
        "payloadRetentionPeriod and payloadRetentionHours are not both given",
        r"body\.payloadRetentionHours",
        r"^cannot be given with payloadRetentionPeriod",
    ),
    (
        "eventTypes of a message list: at most 250 names",
        r"query\.event_types",
        r"^too many event types$",
    ),
    (
        "stored data: appId names an application",
        r"body\.appId",
        r"^no application has this id or uid$",
    ),
    (
        "stored data: without a payload, the event type's schema has an example there",
        r"body\.(exampleIndex|eventType)",
        r"has no object example at index",
    ),
    (
        "stored data: a payload matches its event type's schema where payloads are validated",
        r"body\.(eventType|payload(\..*)?)",
        r"does not match the .* schema|^is not a known event type, and this application validates"
        r"|cannot be validated: it",
    ),
    (
        "an event type's schemas are valid, usable JSON Schemas",
        r"body\.schemas\..*",
        r"^is not a valid JSON Schema|^cannot be used to validate payloads|^is not a usable JSON Schema",
    ),
]

_compiled = [(name, re.compile(f"^(?:{loc})$"), re.compile(msg)) for name, loc, msg in RULES]
excused = collections.Counter()


def _rule_of(error):
    loc = ".".join(str(part) for part in error.get("loc", []))
    msg = str(error.get("msg", ""))
    for name, loc_re, msg_re in _compiled:
        if loc_re.match(loc) and msg_re.search(msg):
            return name
    return None


ARCHIVED = (
    "DELETE archives an event type (as Svix does): it stays readable with "
    "`archived: true`; `expunge=true` removes it"
)


def _archived_event_type(failure, response):
    """A use-after-free report about an event type DELETE archived, not removed."""
    free = str(getattr(failure, "free", ""))
    if "/api/v1/event-type/" not in free or "expunge=true" in free:
        return False
    try:
        return response.status_code == 200 and response.json().get("archived") is True
    except Exception:
        return False


@schemathesis.hook
def filter_failure(context, failure, case, response):
    """False (drop the failure) only for a 422 that breaks nothing but the RULES, or an
    event type that DELETE archived."""
    code = getattr(failure, "code", None)
    if code == "ST301" and _archived_event_type(failure, response):
        excused[ARCHIVED] += 1
        return False
    if code != "ST202" or response.status_code != 422:
        return True
    try:
        errors = response.json().get("detail")
    except Exception:
        return True
    if not isinstance(errors, list) or not errors:
        return True
    rules = [_rule_of(e) for e in errors if isinstance(e, dict)]
    if len(rules) != len(errors) or None in rules:
        return True
    for rule in set(rules):
        excused[rule] += 1
    return False


@atexit.register
def _report():
    # Registered once per import, and schemathesis may import hooks twice.
    if getattr(sys, "_hookline_contract_reported", False):
        return
    sys._hookline_contract_reported = True
    total = sum(excused.values())
    print(f"contract: {total} failures excused by a rule JSON Schema cannot state", file=sys.stderr)
    for rule, n in excused.most_common():
        print(f"contract:   {n:5}  {rule}", file=sys.stderr)
