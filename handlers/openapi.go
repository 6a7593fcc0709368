package handlers

import (
	_ "embed"
	"net/http"
)

// OpenAPI is the OpenAPI 3 document of the API, embedded so the binary
// always serves the description of exactly the code it runs. The test in
// openapi_test.go checks every documented response against real answers,
// so the document cannot drift from the handlers unnoticed.
//
//go:embed openapi.yaml
var OpenAPI []byte

// handleOpenAPI answers GET /openapi.yaml without authentication: the
// document holds no secret, and client generators fetch it anonymously.
func (s *Server) handleOpenAPI(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Content-Type", "application/yaml")
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(http.StatusOK)
	if r.Method != http.MethodHead {
		_, _ = w.Write(OpenAPI)
	}
}
