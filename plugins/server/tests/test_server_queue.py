"""Sharing the one model: arrival order, the queue limit (429), and cancel by closing a stream."""

from __future__ import annotations

import json
import subprocess
import threading
import time

import httpx
import pytest

from desktop_app_server.dispatch import QueueFull, RequestQueue

#: A grammar with no end: the answer runs until max_tokens or a cancel, whatever the model says.
ENDLESS = 'root ::= "la " root'


def wait_until(condition, timeout=120.0):
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        time.sleep(0.01)


def test_the_queue_serves_in_arrival_order_and_refuses_past_its_limit():
    release = threading.Event()
    order = []
    queue = RequestQueue(lambda: 2)
    try:
        first = queue.submit(lambda: (release.wait(), order.append(1)))
        wait_until(lambda: queue.busy)
        second = queue.submit(lambda: order.append(2))
        third = queue.submit(lambda: order.append(3))
        with pytest.raises(QueueFull) as raised:
            queue.submit(lambda: order.append(4))
        assert raised.value.waiting == 2 and raised.value.retry_after >= 1
        third.cancel()  # a client that left while waiting frees its place
        fourth = queue.submit(lambda: order.append(4))
        release.set()
        for f in (first, second, fourth):
            f.result(timeout=10)
        assert order == [1, 2, 4]
    finally:
        release.set()
        queue.close(10)


def test_a_limit_of_zero_still_takes_a_request_when_idle():
    queue = RequestQueue(lambda: 0)
    try:
        assert queue.submit(lambda: 42).result(timeout=10) == 42
    finally:
        queue.close(10)


def test_jobs_run_side_by_side_up_to_the_workers_and_one_that_loads_a_model_runs_alone():
    release = threading.Event()
    running = []
    queue = RequestQueue(lambda: 8, workers=lambda: 2)
    try:
        def held(name):
            running.append(name)
            release.wait()

        first = queue.submit(lambda: held("a"))
        second = queue.submit(lambda: held("b"))
        wait_until(lambda: queue.running == 2)
        third = queue.submit(lambda: held("c"))  # both places are taken: it waits
        alone = queue.submit(lambda: running.append("load"), exclusive=True)
        after = queue.submit(lambda: running.append("after"))
        assert queue.waiting == 3 and sorted(running) == ["a", "b"]
        release.set()
        for f in (first, second, third, alone, after):
            f.result(timeout=10)
        # In arrival order; the exclusive job started only once the others had ended, and
        # nothing started beside it.
        assert running.index("load") > running.index("c") and running[-1] == "after"
    finally:
        release.set()
        queue.close(10)


def _hold_the_decoder(context):
    """The engine's scheduler, for holding it while requests arrive (so they start together)."""
    return context.engine._loaded.scheduler


@pytest.mark.model
def test_requests_from_two_clients_are_written_in_one_batch(app_context, client, model_name):
    scheduler = _hold_the_decoder(app_context)
    scheduler.widest = 0
    answers = {}

    def ask(name):
        reply = client.chat.completions.create(model=model_name, messages=[{"role": "user", "content": name}],
                                               max_tokens=20, extra_body={"grammar": ENDLESS})
        answers[name] = reply.choices[0]

    with scheduler.exclusive():
        threads = [threading.Thread(target=ask, args=(name,)) for name in ("Sing.", "Hum.")]
        for t in threads:
            t.start()
        wait_until(lambda: scheduler.answering == 2)  # both arrived: neither waits for the other
    for t in threads:
        t.join(300)
    assert {c.finish_reason for c in answers.values()} == {"length"} and len(answers) == 2
    assert scheduler.widest == 2


@pytest.mark.model
def test_n_choices_are_written_together_from_one_evaluated_prompt(app_context, client, model_name):
    scheduler = _hold_the_decoder(app_context)
    scheduler.widest = 0
    reply = client.chat.completions.create(model=model_name, messages=[{"role": "user", "content": "Sing."}],
                                           n=3, max_tokens=12, seed=5, temperature=0.9,
                                           extra_body={"grammar": ENDLESS})
    assert [c.index for c in reply.choices] == [0, 1, 2]
    assert all(c.message.content.startswith("la") and c.finish_reason == "length" for c in reply.choices)
    assert reply.usage.completion_tokens == 36
    assert scheduler.widest == 3


@pytest.mark.model
def test_past_the_queue_limit_the_answer_is_429_with_retry_after(server_context, model_name):
    import openai

    from desktop_app_server.controller import ServerController

    server_context.settings.set("queue_limit", 1)
    controller = ServerController(server_context)
    url = controller.start("127.0.0.1", 0)
    release = threading.Event()
    try:
        # Hold every place the model writes answers in, then fill the one waiting place with a
        # real request.
        places = server_context.model.parallel
        for held in range(1, places + 1):
            controller.gateway.queue.submit(release.wait)
            wait_until(lambda: controller.gateway.queue.running == held)
        waiting = threading.Thread(target=lambda: httpx.post(url + "/v1/chat/completions", timeout=300, json={
            "model": model_name, "max_tokens": 2, "messages": [{"role": "user", "content": "hi"}]}))
        waiting.start()
        wait_until(lambda: controller.gateway.queue.waiting == 1)
        client = openai.OpenAI(base_url=url + "/v1", api_key="x", max_retries=0)
        with pytest.raises(openai.RateLimitError) as raised:
            client.chat.completions.create(model=model_name, messages=[{"role": "user", "content": "hi"}])
        assert raised.value.code == "rate_limit_exceeded"
        assert int(raised.value.response.headers["retry-after"]) >= 1
        release.set()
        waiting.join(300)
        # Once the queue drains, requests are served again.
        assert client.chat.completions.create(model=model_name, max_tokens=2,
                                              messages=[{"role": "user", "content": "hi"}]).choices
    finally:
        release.set()
        controller.stop()


@pytest.mark.model
def test_embeddings_wait_in_a_bounded_queue_too_and_get_429_past_it(server_context):
    import openai

    from desktop_app_server.controller import ServerController

    server_context.settings.set("queue_limit", 1)
    controller = ServerController(server_context)
    url = controller.start("127.0.0.1", 0)
    release = threading.Event()
    try:
        queue = controller.gateway.embed_queue
        queue.submit(release.wait)  # holds the embedder
        wait_until(lambda: queue.busy)
        waiting = threading.Thread(target=lambda: httpx.post(url + "/v1/embeddings", timeout=300, json={
            "model": "all-MiniLM-L6-v2", "input": "a cat"}))
        waiting.start()
        wait_until(lambda: queue.waiting == 1)
        assert controller.status["waiting"] == 1
        client = openai.OpenAI(base_url=url + "/v1", api_key="x", max_retries=0)
        with pytest.raises(openai.RateLimitError) as raised:
            client.embeddings.create(model="all-MiniLM-L6-v2", input="a dog")
        assert raised.value.code == "rate_limit_exceeded" and "embedding model is busy" in raised.value.message
        assert int(raised.value.response.headers["retry-after"]) >= 1
        assert controller.request_log[-1].status == 429
        # An answer being written does not hold embeddings up: they have a queue of their own.
        assert not controller.gateway.queue.busy
        release.set()
        waiting.join(300)
        assert len(client.embeddings.create(model="all-MiniLM-L6-v2", input="a dog").data[0].embedding) == 384
    finally:
        release.set()
        controller.stop()


@pytest.mark.model
def test_closing_a_stream_stops_generation_within_a_token(client, controller, model_name):
    max_tokens = 1500
    stream = client.chat.completions.create(
        model=model_name, messages=[{"role": "user", "content": "Sing."}], max_tokens=max_tokens, stream=True,
        extra_body={"grammar": ENDLESS})
    received = 0
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            received += 1
            if received == 5:
                break
    stream.close()
    entry = controller.request_log[-1]
    wait_until(lambda: entry.ended)
    assert entry.finish_reason == "cancelled"
    assert entry.tokens_at_cancel is not None and entry.tokens_at_cancel >= 5
    # The engine stops at the next token after the stop: at most one more than were streamed
    # when the client left (plus the one being decoded then).
    assert entry.completion_tokens <= entry.tokens_at_cancel + 2 < max_tokens
    assert entry.status == 499
    # The model is free again: the next request is served.
    reply = client.chat.completions.create(model=model_name, max_tokens=2, messages=[{"role": "user", "content": "hi"}])
    assert reply.choices[0].finish_reason in ("stop", "length")


@pytest.mark.model
def test_a_client_that_leaves_a_non_streamed_request_stops_it_too(controller, model_name):
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(controller.url + "/v1/chat/completions", timeout=httpx.Timeout(5, read=1.0), json={
            "model": model_name, "max_tokens": 1900, "grammar": ENDLESS,
            "messages": [{"role": "user", "content": "Sing."}]})
    entry = controller.request_log[-1]
    wait_until(lambda: entry.ended)
    assert entry.finish_reason == "cancelled" and entry.completion_tokens < 1900


@pytest.mark.model
def test_curl_sees_openais_sse_framing(controller, model_name):
    body = json.dumps({"model": model_name, "stream": True, "max_tokens": 4, "grammar": ENDLESS,
                       "messages": [{"role": "user", "content": "Sing."}]})
    out = subprocess.run(["curl", "-sS", "-N", "--noproxy", "*", "-H", "Content-Type: application/json",
                          "-d", body, controller.url + "/v1/chat/completions"],
                         capture_output=True, text=True, timeout=300, check=True).stdout
    events = out.split("\n\n")
    assert events[-1] == "" and events[-2] == "data: [DONE]"
    payloads = [json.loads(e[len("data: "):]) for e in events[:-2]]
    assert all(e.startswith("data: ") for e in events[:-1])
    assert all(p["object"] == "chat.completion.chunk" for p in payloads)
    assert "".join(p["choices"][0]["delta"].get("content", "") for p in payloads).startswith("la")
    assert payloads[-1]["choices"][0]["finish_reason"] == "length"


@pytest.mark.model
def test_stopping_the_server_stops_the_answer_being_written(server_context, model_name):
    from desktop_app_server.controller import ServerController

    controller = ServerController(server_context)
    url = controller.start("127.0.0.1", 0)
    received = threading.Event()

    def stream():
        try:
            with httpx.stream("POST", url + "/v1/chat/completions", timeout=300, json={
                    "model": model_name, "stream": True, "max_tokens": 1900, "grammar": ENDLESS,
                    "messages": [{"role": "user", "content": "Sing."}]}) as response:
                for line in response.iter_lines():
                    # Stop only once the model writes: the first chunk comes before the job runs.
                    if line.startswith("data: {") and json.loads(line[6:])["choices"][0]["delta"].get("content"):
                        received.set()
        except httpx.HTTPError:
            pass  # the server went away mid-stream

    reader = threading.Thread(target=stream)
    reader.start()
    assert received.wait(300)
    controller.stop()
    assert not controller.is_running and controller.url == ""
    entry = controller.request_log[-1]
    wait_until(lambda: entry.ended)
    assert entry.finish_reason == "cancelled" and entry.completion_tokens < 1900
    reader.join(60)
