package gateway

// Exported for the external tests (package gateway_test) only.

// OnGraphPath reports whether path is the Cloud-API-compatible send route.
func OnGraphPath(path string) bool { return onGraphPath([]byte(path)) }

// MetaStatus is the HTTP status the Cloud-API-compatible path answers for the error
// that /v1 answers with status and code.
func MetaStatus(status int, code string) int {
	return metaErrorOf(&apiError{status: status, code: code}).status
}
