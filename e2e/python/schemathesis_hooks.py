"""Schemathesis hooks for the end-to-end runs (loaded through SCHEMATHESIS_HOOKS).

The onboarding example in the OpenAPI document carries a placeholder setup token: the real
one is random and printed once by `portunus-server serve`. When the test hands that token over
in PORTUNUS_SETUP_TOKEN, a request that still carries the placeholder is sent with the real
token instead, so the example can complete onboarding. Every other request is left as
schemathesis generated it.
"""

import os

import schemathesis

# The setup token of the document's example for POST /v1/auth/onboarding.
PLACEHOLDER = "st_2f9c1d0e8b7a6f5e4d3c2b1a"


@schemathesis.hook
def before_call(context, case, kwargs):
    token = os.environ.get("PORTUNUS_SETUP_TOKEN")
    if not token or case.method.upper() != "POST" or case.operation.path != "/v1/auth/onboarding":
        return
    if isinstance(case.body, dict) and case.body.get("setup_token") == PLACEHOLDER:
        case.body = {**case.body, "setup_token": token}
