// A deterministic gRPC target for sonde's integration tests: a server and, on SIGUSR1, a
// client that calls it (and a closed port) with a fixed script, so a test knows exactly which
// calls and statuses sonde must report on both sides.
//
//	/sonde.test.Echo/Unary   unary; the request's `service` field picks the status
//	/sonde.test.Echo/Stream  server streaming: three messages, then that status
//	-http PORT               also serves plain HTTP (GET /ping), so the binary has
//	                         net/http's server probes too
//
// Messages are grpc.health.v1's generated ones, so it builds offline from Debian's
// golang-google-grpc-dev in GOPATH mode (GO111MODULE=off GOPATH=/usr/share/gocode).
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
)

type echo struct{}

func code(name string) error {
	switch name {
	case "ok":
		return nil
	case "not_found":
		return status.Error(codes.NotFound, "no such thing")
	case "permission_denied":
		return status.Error(codes.PermissionDenied, "go away")
	default:
		return status.Error(codes.InvalidArgument, "unknown status "+name)
	}
}

func unaryHandler(srv interface{}, ctx context.Context, dec func(interface{}) error, _ grpc.UnaryServerInterceptor) (interface{}, error) {
	in := new(healthpb.HealthCheckRequest)
	if err := dec(in); err != nil {
		return nil, err
	}
	if err := code(in.Service); err != nil {
		return nil, err
	}
	return &healthpb.HealthCheckResponse{Status: healthpb.HealthCheckResponse_SERVING}, nil
}

func streamHandler(srv interface{}, stream grpc.ServerStream) error {
	in := new(healthpb.HealthCheckRequest)
	if err := stream.RecvMsg(in); err != nil {
		return err
	}
	for i := 0; i < 3; i++ {
		if err := stream.SendMsg(&healthpb.HealthCheckResponse{Status: healthpb.HealthCheckResponse_SERVING}); err != nil {
			return err
		}
	}
	return code(in.Service)
}

var serviceDesc = grpc.ServiceDesc{
	ServiceName: "sonde.test.Echo",
	HandlerType: (*interface{})(nil),
	Methods:     []grpc.MethodDesc{{MethodName: "Unary", Handler: unaryHandler}},
	Streams: []grpc.StreamDesc{{
		StreamName:    "Stream",
		Handler:       streamHandler,
		ServerStreams: true,
	}},
}

var streamDesc = grpc.StreamDesc{StreamName: "Stream", ServerStreams: true}

func unary(cc *grpc.ClientConn, method, st string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out := new(healthpb.HealthCheckResponse)
	return cc.Invoke(ctx, method, &healthpb.HealthCheckRequest{Service: st}, out)
}

func stream(cc *grpc.ClientConn, st string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := cc.NewStream(ctx, &streamDesc, "/sonde.test.Echo/Stream")
	if err != nil {
		return err
	}
	if err := s.SendMsg(&healthpb.HealthCheckRequest{Service: st}); err != nil {
		return err
	}
	if err := s.CloseSend(); err != nil {
		return err
	}
	for {
		m := new(healthpb.HealthCheckResponse)
		if err := s.RecvMsg(m); err == io.EOF {
			return nil
		} else if err != nil {
			return err
		}
	}
}

// The script: every call and its expected status, printed so a failing test shows it.
func script(self, closed string) {
	cc, err := grpc.Dial(self, grpc.WithInsecure())
	if err != nil {
		log.Fatal(err)
	}
	defer cc.Close()
	dead, err := grpc.Dial(closed, grpc.WithInsecure())
	if err != nil {
		log.Fatal(err)
	}
	defer dead.Close()
	report := func(what string, err error) {
		fmt.Printf("%s: %v\n", what, status.Code(err))
	}
	for _, st := range []string{"ok", "ok", "ok", "not_found", "not_found", "permission_denied"} {
		report("unary "+st, unary(cc, "/sonde.test.Echo/Unary", st))
	}
	for _, st := range []string{"ok", "ok", "not_found"} {
		report("stream "+st, stream(cc, st))
	}
	report("missing", unary(cc, "/sonde.test.Echo/Missing", "ok"))
	report("closed", unary(dead, "/sonde.test.Echo/Unary", "ok"))
	fmt.Println("script done")
}

func main() {
	port := flag.Int("port", 50051, "port to serve gRPC on (127.0.0.1)")
	closed := flag.Int("closed", 1, "a port nothing listens on, for the UNAVAILABLE call")
	httpPort := flag.Int("http", 0, "also serve HTTP on this port (127.0.0.1) when not 0")
	flag.Parse()
	if *httpPort != 0 {
		hl, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", *httpPort))
		if err != nil {
			log.Fatal(err)
		}
		http.HandleFunc("/ping", func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("pong")) })
		go func() { log.Fatal(http.Serve(hl, nil)) }()
	}
	lis, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", *port))
	if err != nil {
		log.Fatal(err)
	}
	srv := grpc.NewServer()
	srv.RegisterService(&serviceDesc, echo{})
	go func() {
		sig := make(chan os.Signal, 1)
		signal.Notify(sig, syscall.SIGUSR1)
		for range sig {
			script(lis.Addr().String(), fmt.Sprintf("127.0.0.1:%d", *closed))
		}
	}()
	fmt.Printf("listening on %s\n", lis.Addr())
	log.Fatal(srv.Serve(lis))
}
