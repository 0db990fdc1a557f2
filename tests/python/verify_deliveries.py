"""Verifies recorded hookline deliveries the way receivers do, with the real libraries.

Run by the e2e tests in crates/hookline/tests/e2e/delivery_signing.rs:

    python verify_deliveries.py DELIVERIES.json

The file holds {"deliveries": [...]}; each delivery is

    {"name": "...",                 # for messages
     "bodyB64": "...",              # the request body exactly as received
     "headers": {"name": "value"},  # the request headers as received (lower-case names)
     "scheme": "standard" | "ed25519" | "hmac-sha256-hex" | "none",
     "secrets": ["..."],            # every one of these must verify the delivery:
                                    # whsec_ secrets (v1, HMAC) or whpk_ keys (v1a, ed25519)
     "svixHeaders": true | false,   # standard: whether svix-* headers must be present
     "header": "X-..."}             # hmac-sha256-hex: the signature header's name

Each delivery must verify with every listed secret, with both `standardwebhooks` and the
`svix` library (for the standard scheme), and must NOT verify once the body is tampered
with or with a secret that is not listed. Neither library knows ed25519, so a `whpk_` key
is checked here with `cryptography` (OpenSSL's ed25519), parsing the header the way the
Standard Webhooks specification describes it. Exits 1 listing every failed check, 0 when
all passed.
"""

import base64
import hashlib
import hmac
import json
import secrets as pyrandom
import sys
import time

import standardwebhooks
import svix.webhooks
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

FAILURES = []
CHECKS = 0


def check(ok, what):
    global CHECKS
    CHECKS += 1
    if not ok:
        FAILURES.append(what)


def verifies(verifier, secret, body, headers):
    """Returns None when the library accepts the delivery, else the library's complaint."""
    try:
        verifier(secret).verify(body, headers)
        return None
    except Exception as e:  # noqa: BLE001 - any refusal is a failed verification
        return f"{type(e).__name__}: {e}"


def tampered(body):
    # Same length, one byte changed: a receiver that hashed anything but the exact bytes
    # would not notice a difference in length.
    if not body:
        return b" "
    last = body[-1:]
    return body[:-1] + (b" " if last != b" " else b"\t")


def random_whsec():
    return "whsec_" + base64.b64encode(pyrandom.token_bytes(24)).decode()


def random_whpk():
    raw = Ed25519PrivateKey.generate().public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    return "whpk_" + base64.b64encode(raw).decode()


class Ed25519Verifier:
    """A receiver's ed25519 check: the same call shape as the libraries' `Webhook`."""

    TOLERANCE = 300

    def __init__(self, public_key):
        if not public_key.startswith("whpk_"):
            raise ValueError("not a whpk_ key")
        raw = base64.b64decode(public_key[len("whpk_"):], validate=True)
        self.key = Ed25519PublicKey.from_public_bytes(raw)

    def verify(self, body, headers):
        msg_id = headers["webhook-id"] if "webhook-id" in headers else headers["svix-id"]
        ts = headers["webhook-timestamp"] if "webhook-timestamp" in headers else headers["svix-timestamp"]
        sigs = headers["webhook-signature"] if "webhook-signature" in headers else headers["svix-signature"]
        if abs(time.time() - int(ts)) > self.TOLERANCE:
            raise ValueError("timestamp outside tolerance")
        signed = f"{msg_id}.{ts}.".encode() + body
        for entry in sigs.split(" "):
            version, _, sig = entry.partition(",")
            if version != "v1a":
                continue
            try:
                self.key.verify(base64.b64decode(sig, validate=True), signed)
                return
            except (InvalidSignature, ValueError):
                continue
        raise ValueError("no v1a signature verifies")


def only(headers, prefix):
    return {k: v for k, v in headers.items() if not k.startswith(prefix)}


def verify_standard(d, body, headers):
    name = d["name"]
    std = only(headers, "svix-")  # what a Standard Webhooks receiver looks at
    for secret in d["secrets"]:
        short = secret[:12] + "..."
        if secret.startswith("whpk_"):
            verify_ed25519(name, secret, body, headers, std, d.get("svixHeaders"))
            continue
        err = verifies(standardwebhooks.Webhook, secret, body, std)
        check(err is None, f"{name}: standardwebhooks rejects with secret {short}: {err}")
        err = verifies(svix.webhooks.Webhook, secret, body, headers)
        check(err is None, f"{name}: svix rejects (all headers) with {short}: {err}")
        # The svix library prefers svix-* and falls back to webhook-*: check each set alone.
        err = verifies(svix.webhooks.Webhook, secret, body, std)
        check(err is None, f"{name}: svix rejects webhook-* headers with {short}: {err}")
        if d.get("svixHeaders"):
            svix_only = only(headers, "webhook-")
            err = verifies(svix.webhooks.Webhook, secret, body, svix_only)
            check(err is None, f"{name}: svix rejects svix-* headers with {short}: {err}")
        # Negative controls: the libraries are really checking.
        bad = tampered(body)
        check(
            verifies(standardwebhooks.Webhook, secret, bad, std) is not None,
            f"{name}: standardwebhooks accepts a tampered body",
        )
        check(
            verifies(svix.webhooks.Webhook, secret, bad, headers) is not None,
            f"{name}: svix accepts a tampered body",
        )
    if any(s.startswith("whpk_") for s in d["secrets"]):
        check(
            verifies(Ed25519Verifier, random_whpk(), body, std) is not None,
            f"{name}: ed25519 check accepts an unrelated public key",
        )
    other = random_whsec()
    check(
        verifies(standardwebhooks.Webhook, other, body, std) is not None,
        f"{name}: standardwebhooks accepts an unrelated secret",
    )
    if d.get("svixHeaders"):
        for suffix in ("id", "timestamp", "signature"):
            check(
                headers.get(f"svix-{suffix}") == headers.get(f"webhook-{suffix}"),
                f"{name}: svix-{suffix} {headers.get(f'svix-{suffix}')!r} differs from "
                f"webhook-{suffix} {headers.get(f'webhook-{suffix}')!r}",
            )
    else:
        present = sorted(k for k in headers if k.startswith("svix-"))
        check(not present, f"{name}: unexpected svix headers {present}")


def verify_ed25519(name, key, body, headers, std, svix_headers):
    short = key[:12] + "..."
    err = verifies(Ed25519Verifier, key, body, std)
    check(err is None, f"{name}: ed25519 rejects webhook-* headers with {short}: {err}")
    if svix_headers:
        err = verifies(Ed25519Verifier, key, body, only(headers, "webhook-"))
        check(err is None, f"{name}: ed25519 rejects svix-* headers with {short}: {err}")
    check(
        verifies(Ed25519Verifier, key, tampered(body), std) is not None,
        f"{name}: ed25519 check accepts a tampered body",
    )


def verify_hmac_hex(d, body, headers):
    name = d["name"]
    header = d["header"].lower()
    got = headers.get(header)
    check(got is not None, f"{name}: no {d['header']} header; headers: {sorted(headers)}")
    if got is None:
        return
    for secret in d["secrets"]:
        want = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
        check(
            hmac.compare_digest(want, got),
            f"{name}: {d['header']} is {got!r}, HMAC-SHA256 hex of the body is {want!r}",
        )
        bad = hmac.new(secret.encode(), tampered(body), hashlib.sha256).hexdigest()
        check(not hmac.compare_digest(bad, got), f"{name}: a tampered body matches")
    check(
        "webhook-signature" not in headers and "svix-signature" not in headers,
        f"{name}: hmac-sha256-hex endpoint also got a standard signature",
    )


def verify_none(d, body, headers):
    name = d["name"]
    present = sorted(k for k in headers if k in ("webhook-signature", "svix-signature"))
    check(not present, f"{name}: scheme none but signature headers {present}")
    if d.get("header"):
        check(d["header"].lower() not in headers, f"{name}: scheme none but {d['header']} sent")


def main():
    with open(sys.argv[1], encoding="utf-8") as f:
        deliveries = json.load(f)["deliveries"]
    check(len(deliveries) > 0, "no deliveries to verify")
    for d in deliveries:
        body = base64.b64decode(d["bodyB64"], validate=True)
        headers = {k.lower(): v for k, v in d["headers"].items()}
        scheme = d["scheme"]
        if scheme in ("standard", "ed25519"):
            verify_standard(d, body, headers)
        elif scheme == "hmac-sha256-hex":
            verify_hmac_hex(d, body, headers)
        elif scheme == "none":
            verify_none(d, body, headers)
        else:
            check(False, f"{d['name']}: unknown scheme {scheme!r}")
    for f in FAILURES:
        print("FAIL:", f)
    print(f"{len(deliveries)} deliveries, {CHECKS} checks, {len(FAILURES)} failed")
    sys.exit(1 if FAILURES else 0)


if __name__ == "__main__":
    main()
