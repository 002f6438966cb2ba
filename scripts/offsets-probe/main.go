// Built by scripts/gen-offsets.sh with every Go toolchain, so its DWARF tells the struct
// layouts of net/http (HTTP/1 and HTTP/2 server types) for that version.
package main

import "net/http"

func main() {
	_ = http.ListenAndServeTLS("127.0.0.1:0", "", "", http.NotFoundHandler())
}
