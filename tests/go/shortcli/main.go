// A short-lived command-line client for sonde's tests: a fixed number of HTTP GETs and unary
// gRPC calls (to tests/go/grpcserver, which serves both), as fast as it can, then it exits.
// It prints how long it ran, so a test can show it lived less than 100 ms.
//
// Builds offline from Debian's golang-google-grpc-dev in GOPATH mode
// (GO111MODULE=off GOPATH=/usr/share/gocode).
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log"
	"net/http"
	"time"

	"google.golang.org/grpc"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

func main() {
	start := time.Now()
	httpURL := flag.String("http", "", "URL to GET")
	grpcAddr := flag.String("grpc", "", "host:port of the Echo gRPC server")
	nHTTP := flag.Int("n-http", 5, "HTTP GETs")
	nGRPC := flag.Int("n-grpc", 3, "unary gRPC calls")
	flag.Parse()
	for i := 0; i < *nHTTP; i++ {
		resp, err := http.Get(*httpURL)
		if err != nil {
			log.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			log.Fatalf("GET %s: %d", *httpURL, resp.StatusCode)
		}
	}
	cc, err := grpc.Dial(*grpcAddr, grpc.WithInsecure())
	if err != nil {
		log.Fatal(err)
	}
	defer cc.Close()
	for i := 0; i < *nGRPC; i++ {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		out := new(healthpb.HealthCheckResponse)
		err := cc.Invoke(ctx, "/sonde.test.Echo/Unary", &healthpb.HealthCheckRequest{Service: "ok"}, out)
		cancel()
		if err != nil {
			log.Fatal(err)
		}
	}
	fmt.Printf("done in %d us\n", time.Since(start).Microseconds())
}
