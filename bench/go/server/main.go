// The benchmark's target: a Go net/http server whose handler either answers at once
// (-work 0, the trivial handler) or first burns -work of CPU time (the ~1 ms handler).
// Standard library only; builds with Go 1.19 to 1.27.
package main

import (
	"flag"
	"log"
	"net/http"
	"time"
)

var sink uint64

// burn spins on the CPU for d: a handler doing real work, not sleeping.
func burn(d time.Duration) {
	deadline := time.Now().Add(d)
	x := sink
	for time.Now().Before(deadline) {
		for i := 0; i < 256; i++ {
			x = x*6364136223846793005 + 1442695040888963407
		}
	}
	sink = x
}

func main() {
	addr := flag.String("addr", "127.0.0.1:18080", "listen address")
	work := flag.Duration("work", 0, "CPU time each request burns before answering")
	flag.Parse()
	body := []byte("ok\n")
	http.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		if *work > 0 {
			burn(*work)
		}
		w.Write(body)
	})
	log.Fatal(http.ListenAndServe(*addr, nil))
}
