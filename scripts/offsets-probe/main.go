// Built by scripts/gen-offsets.sh with every Go toolchain, so its DWARF tells the struct
// layouts of net/http (HTTP/1 and HTTP/2 server types, client Response) for that version.
package main

import "net/http"

func main() {
	// The client path too, so net/http.Response and the Transport are linked in.
	if resp, err := http.Get("http://127.0.0.1:0/"); err == nil {
		resp.Body.Close()
	}
	_ = http.ListenAndServeTLS("127.0.0.1:0", "", "", http.NotFoundHandler())
}
