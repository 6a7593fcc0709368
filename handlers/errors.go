package handlers

import (
	"errors"
	"fmt"
	"log/slog"
	"net/http"
)

// Error codes of the API (listed in openapi.yaml). They are the machine-readable
// half of every error answer: integrations (UPS controllers, monitoring)
// branch on these strings, so they never change once published.
const (
	CodeMissingToken        = "missing_api_token"
	CodeInvalidToken        = "invalid_api_token"
	CodeScopeNotGranted     = "scope_not_granted"
	CodeUnauthorizedNetwork = "unauthorized_network_for_api_token"
	CodeNotFound            = "not_found"
	CodeMethodNotAllowed    = "method_not_allowed"
	CodeJobRunning          = "job_running"
	CodeInvalidRequest      = "invalid_request"
	CodeRequestTooLarge     = "request_too_large"
	CodeRateLimitReached    = "rate_limit_reached"
	CodeInternal            = "internal_error"
	CodeServiceUnavailable  = "service_unavailable"
	// CodeNoShutdown: POST /startup found no shutdown job to restore.
	CodeNoShutdown = "no_shutdown_to_restore"
)

// statusByCode is the one mapping from error code to HTTP status, so a code
// can never be answered with two different statuses on two paths.
var statusByCode = map[string]int{
	CodeMissingToken:        http.StatusUnauthorized,
	CodeInvalidToken:        http.StatusForbidden,
	CodeScopeNotGranted:     http.StatusForbidden,
	CodeUnauthorizedNetwork: http.StatusForbidden,
	CodeNotFound:            http.StatusNotFound,
	CodeMethodNotAllowed:    http.StatusMethodNotAllowed,
	CodeJobRunning:          http.StatusConflict,
	CodeInvalidRequest:      http.StatusBadRequest,
	CodeRequestTooLarge:     http.StatusRequestEntityTooLarge,
	CodeRateLimitReached:    http.StatusTooManyRequests,
	CodeInternal:            http.StatusInternalServerError,
	CodeServiceUnavailable:  http.StatusServiceUnavailable,
	CodeNoShutdown:          http.StatusConflict,
}

// StatusForCode returns the HTTP status of an error code (500 for an unknown
// code), so other packages serving on the same router (history pages,
// metrics) answer with the same vocabulary.
func StatusForCode(code string) int {
	if st, ok := statusByCode[code]; ok {
		return st
	}
	return http.StatusInternalServerError
}

// Error is an error meant for the API client: Code from the list above and a
// human Message that is safe to show (no secrets, no internal details).
// Any other error reaching writeError is answered as internal_error and its
// text only goes to the log.
type Error struct {
	Code    string
	Message string
}

// Error implements error.
func (e *Error) Error() string { return e.Code + ": " + e.Message }

// Errorf builds an *Error with a formatted message.
func Errorf(code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// WriteError writes err as the JSON error envelope. It is the single writer
// of error answers: *Error values keep their code and message,
// *http.MaxBytesError becomes request_too_large, anything else becomes
// internal_error with a generic message and is logged (only internal errors
// are logged: client mistakes are not operator news).
func (s *Server) WriteError(w http.ResponseWriter, r *http.Request, err error) {
	var apiErr *Error
	var tooLarge *http.MaxBytesError
	switch {
	case errors.As(err, &apiErr):
	case errors.As(err, &tooLarge):
		apiErr = Errorf(CodeRequestTooLarge, "request body larger than %d bytes", tooLarge.Limit)
	default:
		apiErr = &Error{Code: CodeInternal, Message: "internal error"}
	}
	status := StatusForCode(apiErr.Code)
	if apiErr.Code == CodeInternal {
		s.logger.LogAttrs(r.Context(), slog.LevelError, "request failed",
			slog.String("method", r.Method),
			slog.String("path", r.URL.Path),
			slog.String("code", apiErr.Code),
			slog.Any("err", err))
	}
	writeJSON(w, status, envelope{Data: nil, Error: &apiErr.Message, Code: apiErr.Code, Status: "error"})
}
