#!/usr/bin/env python3
"""Records the first TLS handshake message a real client sends, on loopback only.

Usage: capture.py OUT_FILE  (prints the port it listens on, then waits for one connection)

It reads TLS records until the first handshake message (the ClientHello) is complete,
writes exactly the bytes received up to the end of that record, and closes the connection
(the client then reports a handshake failure, which is expected).
"""
import socket
import sys


def read_exact(conn, n):
    data = b""
    while len(data) < n:
        chunk = conn.recv(n - len(data))
        if not chunk:
            raise EOFError("peer closed early")
        data += chunk
    return data


def main():
    out = sys.argv[1]
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    listener.settimeout(10)
    print(listener.getsockname()[1], flush=True)
    conn, _ = listener.accept()
    conn.settimeout(10)
    raw = b""
    handshake = b""
    while True:
        header = read_exact(conn, 5)
        body = read_exact(conn, int.from_bytes(header[3:5], "big"))
        raw += header + body
        handshake += body
        if len(handshake) >= 4 and len(handshake) >= 4 + int.from_bytes(handshake[1:4], "big"):
            break
    with open(out, "wb") as f:
        f.write(raw)
    conn.close()
    listener.close()


if __name__ == "__main__":
    main()
