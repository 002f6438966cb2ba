"""A one-thread HTTP and HTTPS server that runs OpenSSL over memory BIOs (ssl.SSLObject),
the way Node.js does: it reads and writes the sockets itself, so no syscall nests inside
SSL_read/SSL_write. A closed connection's SSL object is freed at once, so the next one
usually gets its address back: the case of a reused SSL object address with a reused fd.

Every request is answered 200 with the 2-byte body "ok", keep-alive.
Usage: membio_server.py PORT TLS_PORT CERT KEY. Used by tests/syscalls.rs."""
import selectors
import socket
import ssl
import sys

port, tls_port, cert, key = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
context.load_cert_chain(cert, key)
sel = selectors.DefaultSelector()


class Conn:
    def __init__(self, sock, tls):
        self.sock = sock
        self.buf = b""
        self.tls = None
        if tls:
            self.incoming, self.outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
            self.tls = context.wrap_bio(self.incoming, self.outgoing, server_side=True)
            self.handshaken = False

    def flush(self):
        data = self.outgoing.read()
        if data:
            self.sock.sendall(data)

    def readable(self):
        data = self.sock.recv(65536)
        if not data:
            return self.close()
        if self.tls is None:
            self.buf += data
        else:
            self.incoming.write(data)
            if not self.handshaken:
                try:
                    self.tls.do_handshake()
                    self.handshaken = True
                except ssl.SSLWantReadError:
                    pass
                self.flush()
                if not self.handshaken:
                    return
            while True:
                try:
                    chunk = self.tls.read(65536)
                except (ssl.SSLWantReadError, ssl.SSLZeroReturnError):
                    break
                if not chunk:  # the peer's close_notify
                    break
                self.buf += chunk
        self.answer()

    def answer(self):
        while b"\r\n\r\n" in self.buf:
            head, _, rest = self.buf.partition(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            if len(rest) < length:
                return
            self.buf = rest[length:]
            response = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
            if self.tls is None:
                self.sock.sendall(response)
            else:
                self.tls.write(response)
                self.flush()

    def close(self):
        sel.unregister(self.sock)
        self.sock.close()
        # Drops the last reference: SSL_free runs now, not at some later collection.
        self.tls = None


def listen(p):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", p))
    s.listen(64)
    return s


listeners = {listen(port): False, listen(tls_port): True}
for s in listeners:
    sel.register(s, selectors.EVENT_READ)
print(f"listening on {port} and {tls_port}", flush=True)
while True:
    for k, _ in sel.select():
        if k.fileobj in listeners:
            sock, _ = k.fileobj.accept()
            sel.register(sock, selectors.EVENT_READ, Conn(sock, listeners[k.fileobj]))
        else:
            try:
                k.data.readable()
            except (ConnectionError, ssl.SSLError):
                k.data.close()
