// A deterministic target for sonde's integration tests: the request decides the status and
// the size of the response, so a test knows exactly what sonde must report.
//
//	/status/{code}?size=N  status code, then N bytes of body
//	/echo                  200, as many bytes as the request body had
//	/implicit              a body written without WriteHeader (net/http sends 200)
//	/slow?ms=N             sleeps N ms, then 200 with no body
//	/call?url=U&method=M   makes that HTTP call (Go's default client; a body of size=N when
//	                       given) and answers with its status, or 502 when the call failed;
//	                       with go=1 the call is made on a goroutine the handler starts
//
// Builds with Go 1.19 to 1.27 and the standard library only. `-tags notls` leaves the TLS
// code out (tls.go): a plaintext-only server, as go_source=auto sees it.
package main

import (
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"
)

func handle(w http.ResponseWriter, r *http.Request) {
	size, _ := strconv.Atoi(r.URL.Query().Get("size"))
	switch {
	case strings.HasPrefix(r.URL.Path, "/status/"):
		code, err := strconv.Atoi(strings.TrimPrefix(r.URL.Path, "/status/"))
		if err != nil || code < 100 || code > 599 {
			code = 400
		}
		io.Copy(io.Discard, r.Body)
		w.WriteHeader(code)
		w.Write([]byte(strings.Repeat("x", size)))
	case r.URL.Path == "/echo":
		n, _ := io.Copy(io.Discard, r.Body)
		w.WriteHeader(http.StatusOK)
		w.Write([]byte(strings.Repeat("e", int(n))))
	case r.URL.Path == "/implicit":
		w.Write([]byte("implicit 200"))
	case r.URL.Path == "/call":
		method := r.URL.Query().Get("method")
		if method == "" {
			method = "GET"
		}
		var body io.Reader
		if size > 0 {
			body = strings.NewReader(strings.Repeat("c", size))
		}
		req, err := http.NewRequest(method, r.URL.Query().Get("url"), body)
		if err != nil {
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		var resp *http.Response
		if r.URL.Query().Get("go") == "1" {
			done := make(chan struct{})
			go func() {
				resp, err = http.DefaultClient.Do(req)
				close(done)
			}()
			<-done
		} else {
			resp, err = http.DefaultClient.Do(req)
		}
		if err != nil {
			w.WriteHeader(http.StatusBadGateway)
			return
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		w.WriteHeader(resp.StatusCode)
	case r.URL.Path == "/slow":
		ms, _ := strconv.Atoi(r.URL.Query().Get("ms"))
		time.Sleep(time.Duration(ms) * time.Millisecond)
		w.WriteHeader(http.StatusOK)
	default:
		http.NotFound(w, r)
	}
}

func main() {
	addr := flag.String("addr", "127.0.0.1:8080", "listen address")
	useTLS := flag.Bool("tls", false, "serve TLS with a self-signed certificate (HTTP/2 via ALPN)")
	flag.Parse()
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		log.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(handle)}
	fmt.Printf("listening on %s\n", ln.Addr())
	os.Stdout.Sync()
	if *useTLS {
		log.Fatal(serveTLS(srv, ln))
	}
	log.Fatal(srv.Serve(ln))
}
