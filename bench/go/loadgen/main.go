// A fixed-rate HTTP load generator for the loss test (wrk has no fixed rate): requests are
// scheduled at -rate per second for -duration, open loop, over -conns keep-alive
// connections. A request whose slot comes while every connection is busy waits in a
// bounded queue; when the queue is full the slot is counted as missed, not sent later, so
// "completed" is exactly what the server answered. Prints one JSON line.
package main

import (
	"encoding/json"
	"flag"
	"io"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

func main() {
	url := flag.String("url", "http://127.0.0.1:18080/", "target URL (loopback only)")
	rate := flag.Int("rate", 20000, "requests per second")
	duration := flag.Duration("duration", 60*time.Second, "how long to send")
	conns := flag.Int("conns", 32, "keep-alive connections")
	flag.Parse()

	client := &http.Client{
		Transport: &http.Transport{MaxIdleConns: *conns, MaxIdleConnsPerHost: *conns, MaxConnsPerHost: *conns},
		Timeout:   10 * time.Second,
	}
	slots := make(chan struct{}, *conns*4)
	var completed, failed, missed int64
	var wg sync.WaitGroup
	for i := 0; i < *conns; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range slots {
				resp, err := client.Get(*url)
				if err != nil {
					atomic.AddInt64(&failed, 1)
					continue
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				atomic.AddInt64(&completed, 1)
			}
		}()
	}

	start := time.Now()
	total := int64(*rate) * int64(*duration/time.Millisecond) / 1000
	var scheduled int64
	// Slots are released in 1 ms batches: a finer timer is not kept on a loaded VM.
	tick := time.NewTicker(time.Millisecond)
	for scheduled < total {
		<-tick.C
		due := int64(time.Since(start).Seconds() * float64(*rate))
		if due > total {
			due = total
		}
		for ; scheduled < due; scheduled++ {
			select {
			case slots <- struct{}{}:
			default:
				missed++
			}
		}
	}
	tick.Stop()
	close(slots)
	wg.Wait()
	elapsed := time.Since(start).Seconds()
	json.NewEncoder(os.Stdout).Encode(map[string]interface{}{
		"scheduled": total, "completed": completed, "failed": failed, "missed": missed,
		"seconds": elapsed, "rate": float64(completed) / elapsed,
	})
}
