package account

// WaitForTest blocks until the cache has applied every Set made so far (ristretto
// applies Sets asynchronously), so tests can assert on hits deterministically.
func (r *Resolver) WaitForTest() { r.cache.Wait() }

// WaitingForTest is the number of callers blocked on a load.
func (r *Resolver) WaitingForTest() int64 { return r.waiting.Load() }

// ParseNoticeForTest exposes the notification parser to the fuzz target.
func ParseNoticeForTest(payload string) (tenantID, phoneNumberID string, err error) {
	n, err := parseNotice(payload)
	return n.TenantID, n.PhoneNumberID, err
}
