package governance

import "github.com/stint-broker/stint/broker"

// RiskFacts exposes what risk scoring measures.
type RiskFacts = riskFacts

// ScoreFacts exposes the pure scoring function.
func ScoreFacts(f RiskFacts, revokeThreshold int) broker.RiskAssessment {
	return score(f, revokeThreshold)
}
