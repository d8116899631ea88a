package graph

import (
	"strings"
	"testing"
)

// TestHostileSuccessBody: a success answer nested deep is refused at a constant cost
// (before the structure guard, fastjson built one error message per level, 600 of them).
func TestHostileSuccessBody(t *testing.T) {
	for _, body := range []string{
		strings.Repeat("[", maxResponseBytes),
		strings.Repeat(`{"a":`, 299) + strings.Repeat("\x01", 60<<10),
	} {
		if _, err := parseSuccess(200, []byte(body)); err == nil {
			t.Fatal("deep body accepted")
		}
		if allocs := testing.AllocsPerRun(5, func() { _, _ = parseSuccess(200, []byte(body)) }); allocs > 10 {
			t.Fatalf("refusing a %d-byte body took %v allocations", len(body), allocs)
		}
	}
}
