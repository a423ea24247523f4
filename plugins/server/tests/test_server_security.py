"""Secure by default: the key, Host and Origin checks, CORS, body size, and OpenAI-style errors."""

from __future__ import annotations

import httpx
import pytest

from desktop_app_server.controller import ServerController, ServerError, config_from_settings


def error_of(response) -> dict:
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}
    return body["error"]


def test_malformed_json_is_a_400_in_openais_shape(http):
    response = http.post("/v1/chat/completions", content=b'{"model": "x", "messages": [',
                         headers={"content-type": "application/json"})
    assert response.status_code == 400
    assert error_of(response)["code"] == "invalid_json"


def test_wrong_types_and_missing_fields_are_400_not_422(http, model_name):
    response = http.post("/v1/chat/completions", json={"model": model_name, "messages": "hello"})
    assert response.status_code == 400
    assert error_of(response)["param"] == "messages"
    response = http.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "hi"}]})
    assert response.status_code == 400
    error = error_of(response)
    assert error["param"] == "model" and error["code"] == "missing_required_parameter"
    response = http.post("/v1/chat/completions", json={"model": model_name, "temperature": "hot",
                                                        "messages": [{"role": "user", "content": "hi"}]})
    assert response.status_code == 400 and error_of(response)["param"] == "temperature"


def test_an_unknown_model_is_404_model_not_found(client):
    import openai

    with pytest.raises(openai.NotFoundError) as raised:
        client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
    assert raised.value.code == "model_not_found"


def test_unsupported_logprobs_are_refused(client, model_name):
    import openai

    with pytest.raises(openai.BadRequestError) as raised:
        client.chat.completions.create(model=model_name, logprobs=True, messages=[{"role": "user", "content": "hi"}])
    assert "not supported" in raised.value.message


def test_an_unknown_route_is_an_openai_style_404(http):
    response = http.get("/v1/nothing-here")
    assert response.status_code == 404 and "Invalid URL" in error_of(response)["message"]


@pytest.mark.model
def test_an_oversize_prompt_is_context_length_exceeded(client, model_name):
    import openai

    with pytest.raises(openai.BadRequestError) as raised:
        client.chat.completions.create(model=model_name, max_tokens=16,
                                       messages=[{"role": "user", "content": "word " * 5000}])
    assert raised.value.code == "context_length_exceeded"


def test_a_bad_host_header_is_refused(http):
    response = http.get("/v1/models", headers={"host": "evil.example:8080"})
    assert response.status_code == 403 and error_of(response)["code"] == "host_not_allowed"
    assert http.get("/v1/models", headers={"host": "localhost"}).status_code == 200


def test_a_foreign_origin_is_refused_and_cors_is_off(http):
    response = http.post("/v1/chat/completions", json={}, headers={"origin": "https://evil.example"})
    assert response.status_code == 403 and error_of(response)["code"] == "origin_not_allowed"
    preflight = http.options("/v1/models", headers={"origin": "https://evil.example",
                                                    "access-control-request-method": "POST"})
    assert "access-control-allow-origin" not in preflight.headers


def test_a_body_over_the_limit_is_413(server_context):
    server_context.settings.set("max_body_mb", 0.001)
    controller = ServerController(server_context)
    url = controller.start("127.0.0.1", 0)
    try:
        response = httpx.post(url + "/v1/chat/completions", content=b"x" * 5000,
                              headers={"content-type": "application/json"})
        assert response.status_code == 413 and error_of(response)["code"] == "request_too_large"
        # A chunked body says no length up front: it is counted as it arrives.
        chunked = httpx.post(url + "/v1/chat/completions", content=iter([b"x" * 600] * 10),
                             headers={"content-type": "application/json"})
        assert chunked.status_code == 413 and error_of(chunked)["code"] == "request_too_large"
    finally:
        controller.stop()


def test_configured_cors_origins_get_cors_headers(server_context):
    server_context.settings.set("cors_origins", ["http://localhost:3000"])
    controller = ServerController(server_context)
    url = controller.start("127.0.0.1", 0)
    try:
        preflight = httpx.options(url + "/v1/models", headers={"origin": "http://localhost:3000",
                                                              "access-control-request-method": "GET"})
        assert preflight.headers["access-control-allow-origin"] == "http://localhost:3000"
    finally:
        controller.stop()


def test_with_a_key_required_a_wrong_or_missing_key_is_401(server_context):
    import openai

    server_context.settings.set("api_key_required", True)
    controller = ServerController(server_context)
    with pytest.raises(ServerError, match="rotate-key"):
        controller.start("127.0.0.1", 0)  # no key made yet: never serve open
    key = controller.keys.create()
    assert key not in controller.keys.path.read_text()  # only its hash is kept
    url = controller.start("127.0.0.1", 0)
    try:
        wrong = openai.OpenAI(base_url=url + "/v1", api_key="sk-wrong", max_retries=0)
        with pytest.raises(openai.AuthenticationError) as raised:
            wrong.models.list()
        assert raised.value.code == "invalid_api_key"
        assert httpx.get(url + "/v1/models").status_code == 401
        right = openai.OpenAI(base_url=url + "/v1", api_key=key, max_retries=0)
        assert right.models.list().object == "list"
        # A new key replaces the old one at once.
        newer = controller.keys.create()
        assert httpx.get(url + "/v1/models", headers={"authorization": f"Bearer {key}"}).status_code == 401
        assert httpx.get(url + "/v1/models", headers={"authorization": f"Bearer {newer}"}).status_code == 200
    finally:
        controller.stop()


def test_beyond_loopback_a_key_is_always_required(server_context):
    config = config_from_settings(server_context, "0.0.0.0", 0)
    assert config.key_required
    assert not config_from_settings(server_context, "127.0.0.1", 0).key_required
    with pytest.raises(ServerError, match="API key"):
        ServerController(server_context).start("0.0.0.0", 0)


def test_a_taken_port_is_reported(controller, server_context):
    port = int(controller.url.rsplit(":", 1)[1])
    with pytest.raises(ServerError, match="in use"):
        ServerController(server_context).start("127.0.0.1", port)


@pytest.mark.model
def test_the_prompt_length_check_counts_the_tools_too(client, server_context, model_name):
    """A request whose messages fit but whose tools (their descriptions, in the model's tool
    protocol) do not is refused before it runs, not answered with the tools cut short."""
    import openai

    from desktop_app.api import ChatMessage

    model = server_context.model
    question = "Which of these tools helps? " + "word " * 600
    tool = {"type": "function", "function": {
        "name": "lookup", "description": "Looks things up. " + "detail " * 600,
        "parameters": {"type": "object", "properties": {"q": {"type": "string"}}}}}
    plain = model.count_tokens(model.render([ChatMessage("user", question)]))
    # Half the window is kept for the answer: the messages alone fit, with the tools they do not.
    assert plain < model.context_length // 2 < plain + 600
    messages = [{"role": "user", "content": question}]
    with pytest.raises(openai.BadRequestError) as raised:
        client.chat.completions.create(model=model_name, messages=messages, tools=[tool], max_tokens=1024)
    assert raised.value.code == "context_length_exceeded"
    counted = int(raised.value.message.split("(")[1].split(" tokens")[0])
    assert counted > plain + 600  # the tools' text was counted
    # Without the tools the same messages are served.
    reply = client.chat.completions.create(model=model_name, messages=messages, max_tokens=1024,
                                           extra_body={"grammar": 'root ::= "ok"'})
    assert reply.choices[0].message.content == "ok"
