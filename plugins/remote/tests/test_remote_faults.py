"""What goes wrong with a remote engine gets a message a person can act on, and nothing is lost:
a server that is down, a refused key, garbage replies; and keys stay out of Parley's files."""

from __future__ import annotations

import http.server
import json
import threading

import pytest

from remote_servers import ALIAS, free_port


class Garbage(http.server.BaseHTTPRequestHandler):
    """A server that is not an OpenAI one: HTML for the models, half-JSON for the stream."""

    def do_GET(self):
        if self.path == "/v1/models" and self.server.mode == "models-json":
            self._send(200, json.dumps({"data": [{"id": "fake"}]}).encode(), "application/json")
        else:
            self._send(200, b"<html>Welcome to nginx!</html>", "text/html")

    def do_POST(self):
        self.rfile.read(int(self.headers.get("content-length", 0)))
        if self.server.mode == "cut-short":  # a clean end of the stream, without a finish or [DONE]
            self._send(200, b'data: {"choices": [{"delta": {"content": "The answer is"}}]}\n\n',
                       "text/event-stream")
            return
        self._send(200, b'data: {"choices": [{"delta": {"content": "Hi"}}]}\n\ndata: {not json\n\n',
                   "text/event-stream")

    def _send(self, status, body, kind):
        self.send_response(status)
        self.send_header("content-type", kind)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def garbage():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Garbage)
    server.mode = "html"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def test_a_server_that_is_down_is_named_with_what_to_check(context):
    from desktop_app.api import ModelLoadError
    from desktop_app_remote import state

    context.load_model(None)
    local = context.engine.model_path
    state.store.add("nowhere", f"http://127.0.0.1:{free_port()}")
    with pytest.raises(ModelLoadError, match="Cannot reach nowhere at http://127.0.0.1:.*refused.*Is the server running"):
        context.load_model("remote:nowhere/any")
    assert "Cannot reach" in state.store.get("nowhere").problem
    # The model that was loaded is loaded again, as after any failed switch.
    assert context.engine.loaded and context.engine.model_path == local


def test_garbage_replies_get_a_clear_error_and_no_crash(context, garbage):
    from desktop_app.api import ChatMessage, ModelLoadError
    from desktop_app_remote import state

    url = f"http://127.0.0.1:{garbage.server_address[1]}"
    state.store.add("junk", url)
    with pytest.raises(ModelLoadError, match="not JSON.*Is http://127.0.0.1:\\d+ an OpenAI-compatible server"):
        context.load_model("remote:junk/fake")
    garbage.mode = "models-json"  # lists a model, then streams garbage
    warnings = context.load_model("remote:junk/fake")
    assert any("not a llama.cpp server" in w for w in warnings)
    events = list(context.engine.stream_chat([ChatMessage("user", "Hi")]))
    assert type(events[-1]).__name__ == "ErrorEvent" and "not JSON" in events[-1].message
    assert events[-1].text == "Hi"  # the text so far is kept
    garbage.mode = "cut-short"
    events = list(context.engine.stream_chat([ChatMessage("user", "Hi")]))
    assert type(events[-1]).__name__ == "ErrorEvent" and "ended before it was finished" in events[-1].message
    assert events[-1].text == "The answer is"


def test_a_model_the_engine_does_not_serve_is_refused_with_what_it_serves(context, llama_server):
    from desktop_app.api import ModelLoadError
    from desktop_app_remote import state

    state.store.add("box", llama_server.url)
    with pytest.raises(ModelLoadError, match=f"does not serve 'gone' now; it serves: {ALIAS}"):
        context.load_model("remote:box/gone")


def test_the_key_goes_to_the_keyring_and_a_wrong_key_is_refused_clearly(context, keyed_server, monkeypatch, capsys,
                                                                         file_keyring, paths):
    from desktop_app.cli import main
    from desktop_app_remote import state

    monkeypatch.setenv("BOX_KEY", "wrong-key")
    assert main(["engines", "add", "keyed", keyed_server.url, "--api-key-env", "BOX_KEY"]) == 1
    err = capsys.readouterr().err
    assert "keyed refused the API key (HTTP 401" in err and "Settings → Engines" in err
    monkeypatch.setenv("BOX_KEY", "sesame-123")
    assert main(["engines", "add", "keyed", keyed_server.url, "--api-key-env", "BOX_KEY", "--replace"]) == 0
    assert f"serves: {ALIAS}" in capsys.readouterr().out
    assert file_keyring.get_password("parley-remote-engines", "keyed") == "sesame-123"
    for folder in (paths.config_dir, paths.data_dir):
        for path in folder.rglob("*"):
            if path.is_file():
                assert b"sesame-123" not in path.read_bytes(), path
    assert main(["engines", "list"]) == 0
    assert "keyed\t" + keyed_server.url + "\tkey\tllama-server\t" + ALIAS in capsys.readouterr().out
    assert main(["engines", "remove", "keyed"]) == 0
    assert file_keyring.get_password("parley-remote-engines", "keyed") is None


def test_bad_names_and_addresses_are_refused_before_anything_is_saved(context):
    from desktop_app_remote import state
    from desktop_app_remote.engines import EngineError

    with pytest.raises(EngineError, match="cannot name an engine"):
        state.store.add("has space", "http://x:1")
    with pytest.raises(EngineError, match="is not a server address: give http://HOST:PORT"):
        state.store.add("box", "ftp://x")
    with pytest.raises(EngineError, match="without a user name or password"):
        state.store.add("box", "http://me:secret@gpu-box:8080")
    assert state.store.add("box", "http://gpu-box:8080/v1/").url == "http://gpu-box:8080"
    assert [e.name for e in state.store.all()] == ["box"]


def test_a_plaintext_keyring_is_refused_unless_chosen(context, monkeypatch):
    import keyring
    from keyring.backends import fail

    from desktop_app_remote import state
    from desktop_app_remote.engines import EngineError, add_engine

    monkeypatch.delenv("PYTHON_KEYRING_BACKEND", raising=False)
    previous = keyring.get_keyring()
    keyring.set_keyring(fail.Keyring())
    try:
        with pytest.raises(EngineError, match="no system keyring .* never writes keys into files"):
            add_engine(state.store, "box", "http://gpu-box:8080", "k-123")
        assert state.store.all() == []  # nothing saved half-way
    finally:
        keyring.set_keyring(previous)


def test_a_new_host_for_an_engine_drops_its_key(context, file_keyring):
    from desktop_app_remote import state
    from desktop_app_remote.engines import add_engine

    add_engine(state.store, "box", "http://gpu-box:8080", "k-123")
    assert state.store.get("box").has_key
    add_engine(state.store, "box", "http://gpu-box:8080/", replace=True)  # the same server: the key stays
    assert state.store.get("box").has_key
    add_engine(state.store, "box", "http://other-box:8080", replace=True)
    assert not state.store.get("box").has_key
    assert file_keyring.get_password("parley-remote-engines", "box") is None
