package main

import (
	"strings"
	"testing"
	"time"
)

const goodConfig = `listen: 127.0.0.1:7171
store:
  path: /tmp/x.db
vault:
  address: http://127.0.0.1:8250
roles:
  - name: db-readonly
    kind: database
    sensitivity: low
    vault: {path: database/creds/stint-readonly, method: read}
    default_ttl: 15m
    max_ttl: 1h
    eligible: {team: data}
    connection: {host: 127.0.0.1, port: 5432, database: postgres}
    auto_approve: true
`

func TestParseConfig(t *testing.T) {
	t.Run("OK", func(t *testing.T) {
		cfg, err := ParseConfig("stint.yaml", []byte(goodConfig))
		if err != nil {
			t.Fatal(err)
		}
		if cfg.Listen != "127.0.0.1:7171" || cfg.Vault.TokenEnv != "VAULT_TOKEN" || cfg.Keys.DefaultTTL != 24*time.Hour {
			t.Fatalf("config = %+v", cfg)
		}
		if r := cfg.Roles[0]; r.MaxTTL != time.Hour || r.Connection.Port != 5432 || !r.AutoApprove || r.MCP.InlineSecret {
			t.Fatalf("role = %+v", r)
		}
	})
	t.Run("MCP", func(t *testing.T) {
		cfg, err := ParseConfig("stint.yaml", []byte(strings.Replace(goodConfig, "    auto_approve: true", "    auto_approve: true\n    mcp: {inline_secret: true}", 1)+
			"mcp: {enabled: true, max_wait: 20s}\noauth: {enabled: true, issuer: https://s.example.com, signing_key_file: /tmp/k}\n"))
		if err != nil {
			t.Fatal(err)
		}
		if !cfg.MCP.Enabled || cfg.MCP.MaxWait != 20*time.Second || !cfg.Roles[0].MCP.InlineSecret {
			t.Fatalf("mcp = %+v, role mcp = %+v", cfg.MCP, cfg.Roles[0].MCP)
		}
	})
	t.Run("Empty", func(t *testing.T) {
		if _, err := ParseConfig("stint.yaml", nil); err != nil {
			t.Fatalf("empty file must mean defaults: %v", err)
		}
	})
	for _, tc := range []struct {
		name, yaml string
		want       []string
	}{
		{"UnknownTopKey", goodConfig + "colour: blue\n", []string{"stint.yaml:16", `unknown key "colour"`}},
		{"UnknownRoleKey", strings.Replace(goodConfig, "    auto_approve: true", "    auto_aprove: true", 1), []string{"stint.yaml:15", `unknown key "auto_aprove"`}},
		{"BadDuration", strings.Replace(goodConfig, "max_ttl: 1h", "max_ttl: forever", 1), []string{"stint.yaml", "forever"}},
		{"DefaultOverMax", strings.Replace(goodConfig, "default_ttl: 15m", "default_ttl: 2h", 1), []string{"default_ttl must be positive and at most max_ttl"}},
		{"MinTTLBelowFloor", strings.Replace(goodConfig, "max_ttl: 1h", "max_ttl: 1h\n    min_ttl: 5s", 1), []string{`role "db-readonly": min_ttl 5s is below 15s`}},
		{"DefaultUnderMin", strings.Replace(goodConfig, "max_ttl: 1h", "max_ttl: 1h\n    min_ttl: 20m", 1), []string{`default_ttl 15m0s is below the role's minimum window of 20m0s`}},
		{"DefaultUnderDefaultMin", strings.Replace(goodConfig, "default_ttl: 15m", "default_ttl: 10s", 1), []string{`default_ttl 10s is below the role's minimum window of 15s`}},
		{"BadSensitivity", strings.Replace(goodConfig, "sensitivity: low", "sensitivity: spicy", 1), []string{`sensitivity must be low, medium, high or critical, not "spicy"`}},
		{"DatabaseWithoutConnection", strings.Replace(goodConfig, "    connection: {host: 127.0.0.1, port: 5432, database: postgres}\n", "", 1), []string{"need connection"}},
		{"DuplicateRole", goodConfig + strings.SplitN(goodConfig, "roles:\n", 2)[1], []string{`role "db-readonly" is defined twice`}},
		{"NegativeNoticeRetention", goodConfig + "approval: {notice_retention: -1h}\n", []string{"approval.notice_retention must not be negative"}},
		{"MCPWithoutOAuth", goodConfig + "mcp: {enabled: true}\n", []string{"mcp.enabled needs oauth.enabled"}},
		{"MCPLongWait", goodConfig + "mcp: {enabled: true, max_wait: 10m}\noauth: {enabled: true, issuer: https://s.example.com, signing_key_file: /tmp/k}\n", []string{"mcp.max_wait 10m0s must be positive and at most 5m"}},
		{"MCPRoleUnknownKey", strings.Replace(goodConfig, "    auto_approve: true", "    auto_approve: true\n    mcp: {inline: true}", 1), []string{`unknown key "inline"`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseConfig("stint.yaml", []byte(tc.yaml))
			if err == nil {
				t.Fatal("no error")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
		})
	}
}

// TestOAuthDelegationsConfig checks the oauth.delegations section.
func TestOAuthDelegationsConfig(t *testing.T) {
	const oauth = `oauth:
  enabled: true
  signing_key_file: /var/lib/stint/oauth-signing.key
  issuer: https://stint.example.com
  trusted_issuers:
    - {issuer: https://idp.example.com, jwks_url: https://idp.example.com/jwks}
  delegations:
`
	cfg, err := ParseConfig("stint.yaml", []byte(goodConfig+oauth+
		"    - {agent: etl-bot, users: [\"*@example.com\", alice@partner.example, 00u1abcd]}\n"+
		"    - {agent: support-bot, issuer: https://idp.example.com, users: [\"*\"]}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if d := cfg.OAuth.Delegations; len(d) != 2 || d[0].Agent != "etl-bot" || len(d[0].Users) != 3 || d[1].Issuer != "https://idp.example.com" {
		t.Fatalf("delegations = %+v", d)
	}
	for name, entry := range map[string]string{
		"NoAgent":         `{users: ["*"]}`,
		"NoUsers":         `{agent: etl-bot}`,
		"BadWildcard":     `{agent: etl-bot, users: ["alice*"]}`,
		"WildcardDomain":  `{agent: etl-bot, users: ["*@*.example.com"]}`,
		"UntrustedIssuer": `{agent: etl-bot, issuer: https://other.example.com, users: ["*"]}`,
	} {
		t.Run(name, func(t *testing.T) {
			_, err := ParseConfig("stint.yaml", []byte(goodConfig+oauth+"    - "+entry+"\n"))
			if err == nil || !strings.Contains(err.Error(), "oauth.delegations[0]") {
				t.Fatalf("err = %v, want oauth.delegations[0] refused", err)
			}
		})
	}
}
