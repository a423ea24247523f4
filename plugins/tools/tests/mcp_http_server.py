"""A tiny MCP server on streamable HTTP, built with the SDK's own ``MCPServer``, for the tests.

Run as ``python mcp_http_server.py``: it binds a free port on 127.0.0.1 itself (so there is no
race between choosing a port and using it), prints ``PORT <n>`` on stdout once it listens, and
serves ``/mcp`` until it is terminated. An optional ``--token T`` makes every request without
``Authorization: Bearer T`` fail, to check that configured headers are sent.
"""

from __future__ import annotations

import argparse
import socket
import sys

import anyio
import uvicorn
from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError


def build_server() -> MCPServer:
    """The server: two small tools, one of which can fail on request."""
    server = MCPServer("parley-test-http", log_level="WARNING")

    @server.tool(description="Add two integers.")
    def add(a: int, b: int) -> int:
        return a + b

    @server.tool(description="Echo the text back, or fail with it when fail is true.")
    def echo(text: str, fail: bool = False) -> str:
        if fail:
            raise ToolError(f"asked to fail: {text}")  # reaches the client as an is_error result
        return text

    return server


def with_token(app, token: str):
    """Wrap an ASGI app so that HTTP requests must carry the bearer token."""
    expected = f"Bearer {token}".encode()

    async def guarded(scope, receive, send):
        if scope["type"] == "http" and dict(scope["headers"]).get(b"authorization") != expected:
            await send({"type": "http.response.start", "status": 401,
                        "headers": [(b"content-type", b"text/plain")]})
            await send({"type": "http.response.body", "body": b"missing or wrong token"})
            return
        await app(scope, receive, send)

    return guarded


async def main(token: str | None) -> None:
    app = build_server().streamable_http_app()
    if token:
        app = with_token(app, token)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    # Listening before the port is announced lets a client connect at once: the kernel
    # queues the connection until uvicorn accepts it.
    sock.listen(128)
    config = uvicorn.Config(app, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    print(f"PORT {sock.getsockname()[1]}", flush=True)
    await server.serve(sockets=[sock])


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--token")
    anyio.run(main, parser.parse_args().token)
    sys.exit(0)
