//go:build notls

package main

import (
	"errors"
	"net"
	"net/http"
)

func serveTLS(*http.Server, net.Listener) error {
	return errors.New("built with -tags notls: no TLS")
}
