"""The client's socket, where the WSGI server exposes it (werkzeug, gunicorn): notice a client that
left, and send small streamed chunks without Nagle delays.

Both are best effort: without a socket in the environ, a stream still stops on its first failed write
and a non-streaming request runs to its max_tokens or timeout.
"""

from __future__ import annotations

import select
import socket

SOCKET_KEYS = ("werkzeug.socket", "gunicorn.socket")


def client_socket(environ):
    for key in SOCKET_KEYS:
        sock = environ.get(key)
        if sock is not None:
            return sock
    return None


def disconnect_probe(environ):
    """A callable that says whether the client closed its connection (None if the socket is unavailable)."""
    sock = client_socket(environ)
    if sock is None:
        return None

    def gone() -> bool:
        try:
            readable, _, _ = select.select([sock], [], [], 0)
            if not readable:
                return False
            return sock.recv(1, socket.MSG_PEEK) == b""  # readable and at EOF: the client closed
        except (ValueError, TypeError):  # e.g. a TLS socket refuses MSG_PEEK: cannot tell
            return False
        except OSError:  # reset by peer
            return True

    return gone


def prepare_stream(environ, seconds_left: float) -> None:
    """Before streaming: send token-sized writes at once, and never block on a client longer than the
    request may last.

    Nagle + delayed ACK can hold each small write ~40 ms. A client that stops reading but keeps the
    connection open would otherwise block the write, and with it the generation and its slot, forever;
    with a send timeout the write fails at the deadline and the server closes the stream.
    """
    sock = client_socket(environ)
    if sock is None:
        return
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except (OSError, AttributeError):
        pass  # not TCP (e.g. a Unix socket)
    try:
        sock.settimeout(max(1.0, seconds_left))
    except (OSError, AttributeError):
        pass
