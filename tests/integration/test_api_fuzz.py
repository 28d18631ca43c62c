"""The worker API fuzzed from its own OpenAPI document (schemathesis): no request makes it
fail with a 5xx, and no mutation is accepted without the API token."""

from __future__ import annotations

import hypothesis
import pytest
import schemathesis

pytestmark = pytest.mark.integration

EXAMPLES = 30


def test_no_server_errors_and_no_unauthenticated_mutation(settings_factory, worker_factory) -> None:
    settings = settings_factory(kafka={"session_timeout_seconds": 6}, worker={"window_seconds": 5})
    worker = worker_factory(settings)
    schema = schemathesis.openapi.from_url(worker.api + "/openapi.json")
    auth = {"Authorization": f"Bearer {settings.api_token()}"}
    problems: list[str] = []
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 20
    for operation in operations:
        mutation = bool(operation.definition.raw.get("security"))

        @hypothesis.settings(
            max_examples=EXAMPLES, deadline=None, database=None, derandomize=True,
            suppress_health_check=list(hypothesis.HealthCheck),
        )
        @hypothesis.given(case=operation.as_strategy())
        def exercise(case: schemathesis.Case) -> None:
            if mutation:
                refused = case.call(base_url=worker.api, timeout=30)
                if refused.status_code != 401:
                    problems.append(f"{case.method} {case.formatted_path} without the token: {refused.status_code}")
            answered = case.call(base_url=worker.api, headers=auth, timeout=60)
            if answered.status_code >= 500:
                problems.append(f"{case.method} {case.formatted_path} {case.query} {case.body!r:.200}: {answered.status_code} {answered.text[:200]}")

        exercise()
    assert problems == [], "\n".join(problems[:20])
    assert worker.get("/health")["status"] == "ok"
