// A Node.js HTTP server that is also a client: /call makes one outgoing request (on a
// keep-alive agent) to this same server and answers with its status. With TLS_PORT CERT KEY,
// the same handler is served over HTTPS too. Used by tests/syscalls.rs.
// Usage: node_http.js PORT [TLS_PORT CERT KEY]
'use strict';
const fs = require('fs');
const http = require('http');
const https = require('https');

const port = Number(process.argv[2]);
const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
const tlsPort = process.argv.length > 5 ? Number(process.argv[3]) : 0;
const tlsAgent = new https.Agent({ keepAlive: true, maxSockets: 1, rejectUnauthorized: false });

function handle(req, res) {
  const url = new URL(req.url, 'http://localhost');
  req.resume();
  req.on('end', () => {
    if (url.pathname === '/call') {
      const method = url.searchParams.get('method') || 'GET';
      const body = Number(url.searchParams.get('size') || 0);
      // ?tls=1: the call goes to this server's HTTPS port.
      const tls = url.searchParams.get('tls') === '1';
      const out = (tls ? https : http).request(
        {
          host: '127.0.0.1',
          port: tls ? tlsPort : port,
          path: url.searchParams.get('to'),
          method,
          agent: tls ? tlsAgent : agent,
        },
        (up) => {
          up.resume();
          up.on('end', () => {
            res.writeHead(up.statusCode, { 'Content-Length': 2 });
            res.end('ok');
          });
        },
      );
      out.on('error', () => {
        res.writeHead(502, { 'Content-Length': 0 });
        res.end();
      });
      if (body > 0) {
        out.setHeader('Content-Length', body);
        out.end('x'.repeat(body));
      } else {
        out.end();
      }
    } else if (url.pathname.startsWith('/status/')) {
      // Two writes without a length: a chunked body of 5 bytes.
      res.statusCode = Number(url.pathname.slice('/status/'.length));
      res.write('abc');
      res.end('de');
    } else {
      res.statusCode = 404;
      res.end('nope');
    }
  });
}

http.createServer(handle).listen(port, '127.0.0.1', () => console.log(`listening on ${port}`));
if (process.argv.length > 5) {
  const options = { cert: fs.readFileSync(process.argv[4]), key: fs.readFileSync(process.argv[5]) };
  https.createServer(options, handle).listen(tlsPort, '127.0.0.1');
}
