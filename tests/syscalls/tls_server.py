"""A Python HTTPS server (the ssl module over OpenSSL), HTTP/1.1 keep-alive.

/status/NNN answers NNN with a 7-byte body; POST reads its body and answers 201.
Usage: tls_server.py PORT CERT KEY. Used by tests/syscalls.rs."""
import http.server
import ssl
import sys

port, cert, key = int(sys.argv[1]), sys.argv[2], sys.argv[3]


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        path = self.path.split("?")[0]
        code = int(path[len("/status/"):]) if path.startswith("/status/") else 404
        body = b"x" * 7
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.send_response(201)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
context.load_cert_chain(cert, key)
server.socket = context.wrap_socket(server.socket, server_side=True)
print(f"listening on {port}", flush=True)
server.serve_forever()
