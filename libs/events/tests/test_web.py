import logging

import pytest
from fastapi.testclient import TestClient

from ehr_events.web import create_app

SECRET_TEXT = "Quixotically-1979-05-17"


@pytest.fixture
def client() -> TestClient:
    app = create_app("test", max_body_bytes=100)

    @app.get("/boom")
    def boom() -> None:
        raise RuntimeError(f"patient {SECRET_TEXT} broke it")

    @app.post("/echo")
    def echo(body: dict) -> dict:
        return body

    return TestClient(app, raise_server_exceptions=False)


def test_an_unexpected_error_is_a_bare_500_problem_and_logs_its_type_only(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG):
        response = client.get("/boom")
    assert response.status_code == 500
    assert response.headers["content-type"] == "application/problem+json"
    assert SECRET_TEXT not in response.text
    assert "RuntimeError" in caplog.text
    assert SECRET_TEXT not in caplog.text
    assert "Traceback" not in caplog.text


def test_a_body_over_the_limit_is_refused_with_413(client: TestClient) -> None:
    response = client.post("/echo", content=b'{"a": "' + b"x" * 200 + b'"}')
    assert response.status_code == 413
    assert response.headers["content-type"] == "application/problem+json"


def test_malformed_json_is_400_and_echoes_nothing(client: TestClient) -> None:
    response = client.post(
        "/echo",
        content=b'{"name": "' + SECRET_TEXT.encode() + b'"',
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 400
    assert SECRET_TEXT not in response.text


def test_the_access_log_never_holds_the_query_string(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="ehr.access"):
        client.get("/health/live", params={"family": SECRET_TEXT})
    assert "/health/live" in caplog.text
    assert SECRET_TEXT not in caplog.text


def test_a_chunked_body_over_the_limit_is_refused_with_413(client: TestClient) -> None:
    def chunks():  # no Content-Length: the limit counts what arrives
        yield b'{"a": "'
        for _ in range(10):
            yield b"x" * 20
        yield b'"}'

    response = client.post("/echo", content=chunks(), headers={"content-type": "application/json"})
    assert response.status_code == 413
    assert response.headers["content-type"] == "application/problem+json"


def test_the_access_log_line_carries_the_status_that_was_answered(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="ehr.access"):
        client.get("/boom")
        client.post("/echo", content=b"x" * 200)
        client.post("/echo", json={"a": 1})
    lines = [r.getMessage() for r in caplog.records if r.name == "ehr.access"]
    assert [line.split()[:3] for line in lines] == [
        ["GET", "/boom", "500"],
        ["POST", "/echo", "413"],
        ["POST", "/echo", "200"],
    ]
