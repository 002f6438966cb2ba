// A constant-rate HTTP/1.1 load generator for bench/soak.sh: -rate requests per second over
// -conns keep-alive connections for -duration, or until SIGTERM/SIGINT; prints how many
// requests got an answer and how many failed. Standard library only (Go 1.19+).
package main

import (
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

func main() {
	url := flag.String("url", "", "URL to GET")
	rate := flag.Int("rate", 2000, "requests per second")
	conns := flag.Int("conns", 8, "keep-alive connections")
	duration := flag.Duration("duration", time.Minute, "how long")
	flag.Parse()
	client := &http.Client{
		Transport: &http.Transport{MaxIdleConnsPerHost: *conns, MaxConnsPerHost: *conns},
		Timeout:   10 * time.Second,
	}
	var ok, failed int64
	stop := make(chan struct{})
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	go func() {
		select {
		case <-sig:
		case <-time.After(*duration):
		}
		close(stop)
	}()
	var wg sync.WaitGroup
	interval := time.Duration(int64(time.Second) * int64(*conns) / int64(*rate))
	for i := 0; i < *conns; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			next := time.Now()
			for {
				select {
				case <-stop:
					return
				default:
				}
				resp, err := client.Get(*url)
				if err == nil {
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				}
				if err == nil && resp.StatusCode == 200 {
					atomic.AddInt64(&ok, 1)
				} else {
					atomic.AddInt64(&failed, 1)
				}
				next = next.Add(interval)
				if d := time.Until(next); d > 0 {
					time.Sleep(d)
				}
			}
		}()
	}
	wg.Wait()
	fmt.Printf("ok %d failed %d\n", ok, failed)
}
