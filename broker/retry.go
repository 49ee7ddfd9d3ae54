package broker

import (
	"math/rand/v2"
	"time"
)

// Backoff returns the delay before attempt n+1 of a retry that never gives
// up (revocations, approval notices): base doubled per attempt, capped at
// ceiling, with ±10% jitter so that many failed attempts do not retry in
// lockstep; never under a millisecond.
func Backoff(base, ceiling time.Duration, attempts int) time.Duration {
	d := base
	for i := 1; i < attempts && d < ceiling; i++ {
		d *= 2
	}
	d = min(d, ceiling)
	jitter := time.Duration(rand.Int64N(int64(d)/5+1)) - d/10
	return max(d+jitter, time.Millisecond)
}

// RetryErrorText is an error as recorded for a retry (a lease's revoke
// error, a notice's last error): its message, cut at 300 bytes.
func RetryErrorText(err error) string {
	msg := err.Error()
	if len(msg) > 300 {
		msg = msg[:300] + "…"
	}
	return msg
}
