package web

// DecodeStrict is decodeJSON on a body already read, for the fuzz target.
func DecodeStrict(body []byte, v any) error { return decodeStrict(body, v) }

// Request bodies of the API, for the fuzz target.
type (
	CreateLeaseRequest = createLeaseRequest
	CreateAgentRequest = createAgentRequest
	DecideRequest      = decideRequest
)
