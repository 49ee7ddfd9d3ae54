-- Each agent's request pattern, the measure behind the live risk score's
-- rate and burst factors (approvals/risk.go), kept in the store so that
-- every replica counts every request (broker.RiskPatternStore). The twin
-- of postgres/0006_risk_patterns.sql.

-- +goose Up
CREATE TABLE risk_patterns (
    agent_id   TEXT    NOT NULL PRIMARY KEY,
    pattern    TEXT    NOT NULL,
    updated_at INTEGER NOT NULL
) STRICT, WITHOUT ROWID;

CREATE INDEX risk_patterns_updated_at ON risk_patterns (updated_at);
