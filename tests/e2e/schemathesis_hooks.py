"""Schemathesis hook: the API's only server errors are the documented
gateway answers (storage or Kafka failing), each with its own code."""

import schemathesis

GATEWAY_CODES = {
    502: {"integrity_failure", "s3_get_failed", "s3_upload_failed", "s3_presign_failed", "backend_error"},
    503: {"backend_unavailable"},
}


@schemathesis.check
def server_errors_are_documented_gateway_errors(ctx, response, case):
    status = response.status_code
    if status < 500:
        return None
    allowed = GATEWAY_CODES.get(status)
    if allowed is None:
        raise AssertionError(f"undocumented server error {status}: {response.text[:300]}")
    code = response.json().get("code")
    if code not in allowed:
        raise AssertionError(f"{status} with code {code!r}, expected one of {sorted(allowed)}")
    return None
