package storetest

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/stint-broker/stint/broker"
)

// identityStore returns the store as a broker.IdentityStore; every store
// must implement it.
func identityStore(tb testing.TB, s Store) broker.IdentityStore {
	tb.Helper()
	is, ok := s.(broker.IdentityStore)
	if !ok {
		tb.Fatalf("%T does not implement broker.IdentityStore", s)
	}
	return is
}

// testIdentity checks the agent identity columns, issued certificates and
// the assertion replay cache.
func testIdentity(t *testing.T, open func(tb testing.TB) Store) {
	t.Run("AgentAuthColumns", func(t *testing.T) {
		s := open(t)
		a := mustCreateAgent(t, s, "etl-bot")
		got, err := s.FindAgentByID(t.Context(), a.ID)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(got.AuthMethods, []string{broker.AuthAPIKey}) || got.SPIFFEID != "" || got.ClientSecretHash != "" ||
			got.PublicJWKS != "" || got.TokensNotBefore != nil {
			t.Fatalf("new agent identity = %+v, want api_key only and nothing else", got)
		}

		id, hash, jwks := "spiffe://example.org/ns/etl/sa/loader", "ab12", `{"keys":[]}`
		upd := broker.AgentUpdate{
			AuthMethods: []string{broker.AuthMTLS, broker.AuthPrivateKeyJWT}, SPIFFEID: &id,
			ClientSecretHash: &hash, PublicJWKS: &jwks, TokensNotBefore: ptr(at(time.Minute)),
		}
		if _, err := s.UpdateAgent(t.Context(), a.ID, upd); err != nil {
			t.Fatal(err)
		}
		got, _ = s.FindAgentByID(t.Context(), a.ID)
		if !slices.Equal(got.AuthMethods, upd.AuthMethods) || got.SPIFFEID != id || got.ClientSecretHash != hash ||
			got.PublicJWKS != jwks || got.TokensNotBefore == nil || !got.TokensNotBefore.Equal(at(time.Minute)) {
			t.Fatalf("updated agent identity = %+v", got)
		}
		found, _, err := s.FindAgents(t.Context(), broker.AgentFilter{SPIFFEID: &id})
		if err != nil || len(found) != 1 || found[0].ID != a.ID {
			t.Fatalf("FindAgents(spiffe) = %v, %v", found, err)
		}
		empty := ""
		if found, _, _ := s.FindAgents(t.Context(), broker.AgentFilter{SPIFFEID: &empty}); len(found) != 0 {
			t.Fatalf("an empty SPIFFE ID matched %d agents", len(found))
		}

		// A SPIFFE ID maps to one agent only.
		b := mustCreateAgent(t, s, "other-bot")
		if _, err := s.UpdateAgent(t.Context(), b.ID, broker.AgentUpdate{SPIFFEID: &id}); broker.ErrorCode(err) != broker.ECONFLICT {
			t.Fatalf("second agent with the same SPIFFE ID: %v, want ECONFLICT", err)
		}
		// Clearing works, and two agents may both have none.
		if _, err := s.UpdateAgent(t.Context(), a.ID, broker.AgentUpdate{SPIFFEID: &empty, TokensNotBefore: &time.Time{}}); err != nil {
			t.Fatal(err)
		}
		got, _ = s.FindAgentByID(t.Context(), a.ID)
		if got.SPIFFEID != "" || got.TokensNotBefore != nil {
			t.Fatalf("cleared agent = %+v", got)
		}
	})

	t.Run("Certificates", func(t *testing.T) {
		s := open(t)
		is := identityStore(t, s)
		a := mustCreateAgent(t, s, "etl-bot")
		newCert := func(serial string, created time.Time) *broker.Certificate {
			return &broker.Certificate{Serial: serial, AgentID: a.ID, Fingerprint: "f-" + serial, URI: "spiffe://stint.local/agent/etl-bot",
				NotBefore: created, NotAfter: created.Add(24 * time.Hour), CreatedAt: created}
		}
		c1, c2 := newCert("0a01", at(0)), newCert("0a02", at(time.Minute))
		for _, c := range []*broker.Certificate{c1, c2} {
			if err := is.CreateCertificate(t.Context(), c); err != nil {
				t.Fatal(err)
			}
		}
		if err := is.CreateCertificate(t.Context(), newCert("0a01", at(0))); broker.ErrorCode(err) != broker.ECONFLICT {
			t.Fatalf("duplicate serial: %v, want ECONFLICT", err)
		}
		orphan := newCert("0a03", at(0))
		orphan.AgentID = newID()
		if err := is.CreateCertificate(t.Context(), orphan); broker.ErrorCode(err) != broker.ENOTFOUND {
			t.Fatalf("certificate of an unknown agent: %v, want ENOTFOUND", err)
		}
		got, err := is.FindCertificateBySerial(t.Context(), "0a01")
		if err != nil || fmtCert(got) != fmtCert(c1) {
			t.Fatalf("FindCertificateBySerial = %s, %v; want %s", fmtCert(got), err, fmtCert(c1))
		}
		if _, err := is.FindCertificateBySerial(t.Context(), "ffff"); broker.ErrorCode(err) != broker.ENOTFOUND {
			t.Fatalf("unknown serial: %v, want ENOTFOUND", err)
		}
		list, err := is.FindCertificates(t.Context(), a.ID)
		if err != nil || len(list) != 2 || list[0].Serial != "0a02" {
			t.Fatalf("FindCertificates = %v, %v; want newest first", list, err)
		}

		n, err := is.RevokeCertificates(t.Context(), a.ID, "0a01", at(time.Hour), "lost laptop")
		if err != nil || n != 1 {
			t.Fatalf("revoke one = %d, %v", n, err)
		}
		got, _ = is.FindCertificateBySerial(t.Context(), "0a01")
		if got.RevokedAt == nil || !got.RevokedAt.Equal(at(time.Hour)) || got.RevokeReason != "lost laptop" {
			t.Fatalf("revoked certificate = %s", fmtCert(got))
		}
		if n, _ := is.RevokeCertificates(t.Context(), a.ID, "0a01", at(2*time.Hour), "again"); n != 0 {
			t.Fatalf("revoking a revoked certificate counted %d", n)
		}
		if n, _ := is.RevokeCertificates(t.Context(), a.ID, "", at(2*time.Hour), "agent disabled"); n != 1 {
			t.Fatalf("revoke all = %d, want the one left", n)
		}
		got, _ = is.FindCertificateBySerial(t.Context(), "0a01")
		if got.RevokeReason != "lost laptop" {
			t.Fatalf("revoking all rewrote an earlier revocation: %s", fmtCert(got))
		}
	})

	t.Run("JTIReplayCache", func(t *testing.T) {
		s := open(t)
		is := identityStore(t, s)
		if err := is.UseJTI(t.Context(), "etl-bot", "j1", at(5*time.Minute), at(0)); err != nil {
			t.Fatal(err)
		}
		if err := is.UseJTI(t.Context(), "etl-bot", "j1", at(5*time.Minute), at(time.Minute)); broker.ErrorCode(err) != broker.ECONFLICT {
			t.Fatalf("replayed jti: %v, want ECONFLICT", err)
		}
		// The same id from another client is another assertion.
		if err := is.UseJTI(t.Context(), "other-bot", "j1", at(5*time.Minute), at(time.Minute)); err != nil {
			t.Fatalf("same jti, other client: %v", err)
		}
		// Once expired the entry is purged; the assertion itself is refused
		// by its exp before the cache is asked.
		if err := is.UseJTI(t.Context(), "etl-bot", "j1", at(11*time.Minute), at(6*time.Minute)); err != nil {
			t.Fatalf("jti after expiry: %v", err)
		}
	})

	t.Run("SubjectTokenReplayCache", func(t *testing.T) {
		s := open(t)
		is := identityStore(t, s)
		const idp = "https://idp.example.com"
		if err := is.UseSubjectToken(t.Context(), idp, "u1", at(5*time.Minute), at(0)); err != nil {
			t.Fatal(err)
		}
		if err := is.UseSubjectToken(t.Context(), idp, "u1", at(5*time.Minute), at(time.Minute)); broker.ErrorCode(err) != broker.ECONFLICT {
			t.Fatalf("replayed user token: %v, want ECONFLICT", err)
		}
		// The same jti from another issuer is another token; the client
		// assertion cache is a separate namespace.
		if err := is.UseSubjectToken(t.Context(), "https://other-idp.example.com", "u1", at(5*time.Minute), at(time.Minute)); err != nil {
			t.Fatalf("same jti, other issuer: %v", err)
		}
		if err := is.UseJTI(t.Context(), idp, "u1", at(5*time.Minute), at(time.Minute)); err != nil {
			t.Fatalf("assertion id equal to a user token's: %v", err)
		}
		// Still refused until it expires, then purged.
		if err := is.UseSubjectToken(t.Context(), idp, "u1", at(5*time.Minute), at(5*time.Minute-time.Second)); broker.ErrorCode(err) != broker.ECONFLICT {
			t.Fatalf("replay just before expiry: %v, want ECONFLICT", err)
		}
		if err := is.UseSubjectToken(t.Context(), idp, "u1", at(11*time.Minute), at(6*time.Minute)); err != nil {
			t.Fatalf("user token id after expiry: %v", err)
		}
	})
}

// fmtCert renders every field of c for comparisons.
func fmtCert(c *broker.Certificate) string {
	if c == nil {
		return "<nil certificate>"
	}
	return fmt.Sprintf("serial=%s agent=%s fp=%s uri=%s nb=%s na=%s created=%s revoked=%s reason=%s",
		c.Serial, c.AgentID, c.Fingerprint, c.URI, fmtTime(&c.NotBefore), fmtTime(&c.NotAfter),
		fmtTime(&c.CreatedAt), fmtTime(c.RevokedAt), c.RevokeReason)
}
