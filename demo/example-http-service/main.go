// The demo service of the README and of the compose stack: answers on -addr
// (127.0.0.1:8080) after a random delay, with status
// /<code> when the path asks for one (e.g. /500), 200 otherwise.
package main

import (
	"flag"
	"fmt"
	"log"
	"math/rand"
	"net/http"
	"strconv"
	"strings"
	"time"
)

func handle(w http.ResponseWriter, r *http.Request) {
	time.Sleep(time.Duration(rand.Intn(100)) * time.Millisecond)
	status := http.StatusOK
	if code, err := strconv.Atoi(strings.TrimPrefix(r.URL.Path, "/")); err == nil && code >= 200 && code < 600 {
		status = code
	}
	w.WriteHeader(status)
	fmt.Fprintf(w, "hello from the demo service: %d\n", status)
}

func main() {
	addr := flag.String("addr", "127.0.0.1:8080", "listen address")
	flag.Parse()
	log.Printf("listening on %s", *addr)
	log.Fatal(http.ListenAndServe(*addr, http.HandlerFunc(handle)))
}
