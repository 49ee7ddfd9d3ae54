package mcp

import "github.com/stint-broker/stint/broker"

// WriteResult is what FileDelivery.Write returns, for tests.
type WriteResult = fileResult

// WriteForTest calls f.Write.
func WriteForTest(f *FileDelivery, l *broker.Lease, c *broker.Credential) (WriteResult, error) {
	return f.Write(l, c)
}
