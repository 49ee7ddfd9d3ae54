package storetest

import (
	"slices"
	"testing"
	"time"

	"github.com/stint-broker/stint/broker"
)

func testAgents(t *testing.T, open func(tb testing.TB) Store) {
	t.Run("Create", func(t *testing.T) {
		t.Run("OK", func(t *testing.T) {
			s := open(t)
			want := &broker.Agent{
				ID:         newID(),
				Name:       "etl-bot",
				Owner:      "ada@example.com",
				Labels:     map[string]string{"env": "prod", "team": "data"},
				State:      broker.AgentActive,
				CreatedAt:  at(0),
				UpdatedAt:  at(time.Second),
				LastSeenAt: ptr(at(2 * time.Second)),
			}
			if err := s.CreateAgent(t.Context(), want); err != nil {
				t.Fatal(err)
			}
			got, err := s.FindAgentByID(t.Context(), want.ID)
			if err != nil {
				t.Fatal(err)
			}
			wantAgent(t, got, want)
		})

		t.Run("AssignsIDAndTimes", func(t *testing.T) {
			s := open(t)
			a := &broker.Agent{Name: "etl-bot", Owner: "ada@example.com", State: broker.AgentActive}
			if err := s.CreateAgent(t.Context(), a); err != nil {
				t.Fatal(err)
			}
			if a.ID == "" || a.CreatedAt.IsZero() || a.UpdatedAt.IsZero() {
				t.Fatalf("after CreateAgent: %s; want id, created and updated set", fmtAgent(a))
			}
			got, err := s.FindAgentByID(t.Context(), a.ID)
			if err != nil {
				t.Fatal(err)
			}
			wantAgent(t, got, a)
			if got.Labels == nil {
				t.Error("Labels = nil, want an empty map")
			}
		})

		t.Run("ErrConflictName", func(t *testing.T) {
			s := open(t)
			mustCreateAgent(t, s, "etl-bot")
			err := s.CreateAgent(t.Context(), &broker.Agent{
				ID: newID(), Name: "etl-bot", Owner: "bob@example.com", State: broker.AgentActive, CreatedAt: t0, UpdatedAt: t0,
			})
			wantError(t, err, broker.ECONFLICT, "")
		})

		t.Run("ErrConflictID", func(t *testing.T) {
			s := open(t)
			a := mustCreateAgent(t, s, "etl-bot")
			err := s.CreateAgent(t.Context(), &broker.Agent{
				ID: a.ID, Name: "other-bot", Owner: "bob@example.com", State: broker.AgentActive, CreatedAt: t0, UpdatedAt: t0,
			})
			wantError(t, err, broker.ECONFLICT, "")
		})
	})

	t.Run("FindByID", func(t *testing.T) {
		t.Run("ErrNotFound", func(t *testing.T) {
			s := open(t)
			mustCreateAgent(t, s, "etl-bot")
			_, err := s.FindAgentByID(t.Context(), newID())
			wantError(t, err, broker.ENOTFOUND, "Agent not found.")
		})
	})

	t.Run("FindByName", func(t *testing.T) {
		t.Run("OK", func(t *testing.T) {
			s := open(t)
			want := mustCreateAgent(t, s, "etl-bot")
			mustCreateAgent(t, s, "etl-bot-2")
			got, err := s.FindAgentByName(t.Context(), "etl-bot")
			if err != nil {
				t.Fatal(err)
			}
			wantAgent(t, got, want)
		})

		t.Run("ErrNotFound", func(t *testing.T) {
			s := open(t)
			mustCreateAgent(t, s, "etl-bot")
			_, err := s.FindAgentByName(t.Context(), "etl")
			wantError(t, err, broker.ENOTFOUND, "Agent not found.")
		})
	})

	t.Run("Find", func(t *testing.T) {
		s := open(t)
		// Created out of order: results come by name.
		for _, name := range []string{"delta", "alpha", "echo", "charlie", "bravo"} {
			mustCreateAgent(t, s, name)
		}
		suspended := broker.AgentSuspended
		if _, err := s.UpdateAgent(t.Context(), mustFindAgent(t, s, "charlie").ID, broker.AgentUpdate{State: &suspended}); err != nil {
			t.Fatal(err)
		}
		if _, err := s.UpdateAgent(t.Context(), mustFindAgent(t, s, "echo").ID, broker.AgentUpdate{State: &suspended}); err != nil {
			t.Fatal(err)
		}

		for _, tt := range []struct {
			name      string
			filter    broker.AgentFilter
			want      []string
			wantTotal int
		}{
			{"All", broker.AgentFilter{}, []string{"alpha", "bravo", "charlie", "delta", "echo"}, 5},
			{"Page", broker.AgentFilter{Offset: 1, Limit: 2}, []string{"bravo", "charlie"}, 5},
			{"LastPage", broker.AgentFilter{Offset: 4, Limit: 2}, []string{"echo"}, 5},
			{"OffsetOnly", broker.AgentFilter{Offset: 3}, []string{"delta", "echo"}, 5},
			{"PastTheEnd", broker.AgentFilter{Offset: 10, Limit: 2}, nil, 5},
			{"State", broker.AgentFilter{State: &suspended}, []string{"charlie", "echo"}, 2},
			{"StatePage", broker.AgentFilter{State: &suspended, Limit: 1}, []string{"charlie"}, 2},
			{"Name", broker.AgentFilter{Name: ptr("bravo")}, []string{"bravo"}, 1},
			{"ID", broker.AgentFilter{ID: &mustFindAgent(t, s, "delta").ID}, []string{"delta"}, 1},
			{"NoMatch", broker.AgentFilter{Name: ptr("zulu")}, nil, 0},
		} {
			t.Run(tt.name, func(t *testing.T) {
				agents, total, err := s.FindAgents(t.Context(), tt.filter)
				if err != nil {
					t.Fatal(err)
				}
				var got []string
				for _, a := range agents {
					got = append(got, a.Name)
				}
				if !slices.Equal(got, tt.want) {
					t.Errorf("names = %v, want %v", got, tt.want)
				}
				if total != tt.wantTotal {
					t.Errorf("total = %d, want %d", total, tt.wantTotal)
				}
			})
		}
	})

	t.Run("Update", func(t *testing.T) {
		t.Run("OK", func(t *testing.T) {
			s := open(t)
			a := mustCreateAgent(t, s, "etl-bot")
			seen := at(time.Hour)
			got, err := s.UpdateAgent(t.Context(), a.ID, broker.AgentUpdate{
				Owner:      ptr("grace@example.com"),
				Labels:     map[string]string{"env": "staging"},
				State:      ptr(broker.AgentDisabled),
				LastSeenAt: &seen,
			})
			if err != nil {
				t.Fatal(err)
			}
			if got.UpdatedAt.Before(a.UpdatedAt) || got.UpdatedAt.Equal(a.UpdatedAt) {
				t.Errorf("UpdatedAt = %s, want after %s", fmtTime(&got.UpdatedAt), fmtTime(&a.UpdatedAt))
			}
			want := *a
			want.Owner, want.Labels, want.State, want.LastSeenAt = "grace@example.com", map[string]string{"env": "staging"}, broker.AgentDisabled, &seen
			want.UpdatedAt = got.UpdatedAt
			wantAgent(t, got, &want)
			wantAgent(t, mustFindAgent(t, s, "etl-bot"), &want)
		})

		t.Run("ErrConflictDisabledIsFinal", func(t *testing.T) {
			s := open(t)
			a := mustCreateAgent(t, s, "etl-bot")
			if _, err := s.UpdateAgent(t.Context(), a.ID, broker.AgentUpdate{State: ptr(broker.AgentDisabled)}); err != nil {
				t.Fatal(err)
			}
			for _, state := range []broker.AgentState{broker.AgentActive, broker.AgentSuspended} {
				_, err := s.UpdateAgent(t.Context(), a.ID, broker.AgentUpdate{State: &state, Owner: ptr("mallory@example.com")})
				wantError(t, err, broker.ECONFLICT, "Agent etl-bot is disabled for good: it cannot be re-activated or suspended. Register a new agent instead.")
			}
			got := mustFindAgent(t, s, "etl-bot")
			if got.State != broker.AgentDisabled || got.Owner != a.Owner {
				t.Errorf("after refused updates: state %s, owner %s; want disabled and unchanged", got.State, got.Owner)
			}
			// Other changes to a disabled agent still apply.
			if _, err := s.UpdateAgent(t.Context(), a.ID, broker.AgentUpdate{State: ptr(broker.AgentDisabled), Owner: ptr("grace@example.com")}); err != nil {
				t.Fatal(err)
			}
		})

		t.Run("NilFieldsKept", func(t *testing.T) {
			s := open(t)
			a := mustCreateAgent(t, s, "etl-bot")
			got, err := s.UpdateAgent(t.Context(), a.ID, broker.AgentUpdate{})
			if err != nil {
				t.Fatal(err)
			}
			want := *a
			want.UpdatedAt = got.UpdatedAt
			wantAgent(t, got, &want)
		})

		t.Run("ClearLastSeenAndLabels", func(t *testing.T) {
			s := open(t)
			a := mustCreateAgent(t, s, "etl-bot")
			if _, err := s.UpdateAgent(t.Context(), a.ID, broker.AgentUpdate{LastSeenAt: ptr(at(time.Hour))}); err != nil {
				t.Fatal(err)
			}
			got, err := s.UpdateAgent(t.Context(), a.ID, broker.AgentUpdate{LastSeenAt: &time.Time{}, Labels: map[string]string{}})
			if err != nil {
				t.Fatal(err)
			}
			stored := mustFindAgent(t, s, "etl-bot")
			for _, g := range []*broker.Agent{got, stored} {
				if g.LastSeenAt != nil || len(g.Labels) != 0 {
					t.Errorf("after clearing: %s; want last_seen <nil> and no labels", fmtAgent(g))
				}
			}
		})

		t.Run("ErrNotFound", func(t *testing.T) {
			s := open(t)
			_, err := s.UpdateAgent(t.Context(), newID(), broker.AgentUpdate{Owner: ptr("grace@example.com")})
			wantError(t, err, broker.ENOTFOUND, "Agent not found.")
		})
	})
}

func testAPIKeys(t *testing.T, open func(tb testing.TB) Store) {
	newKey := func(a *broker.Agent, n int) *broker.APIKey {
		return &broker.APIKey{
			ID:        newID(),
			AgentID:   a.ID,
			Prefix:    "stk_" + string(rune('a'+n)),
			Hash:      "hash-" + a.Name + "-" + string(rune('a'+n)),
			CreatedAt: at(time.Duration(n) * time.Minute),
			ExpiresAt: at(24 * time.Hour),
		}
	}

	t.Run("Create", func(t *testing.T) {
		t.Run("OK", func(t *testing.T) {
			s := open(t)
			a := mustCreateAgent(t, s, "etl-bot")
			want := newKey(a, 0)
			want.RevokedAt = ptr(at(time.Hour))
			if err := s.CreateAPIKey(t.Context(), want); err != nil {
				t.Fatal(err)
			}
			got, _, err := s.FindAgentByAPIKeyHash(t.Context(), want.Hash)
			if err != nil {
				t.Fatal(err)
			}
			if g, w := fmtAPIKey(got), fmtAPIKey(want); g != w {
				t.Fatalf("key differs\ngot:  %s\nwant: %s", g, w)
			}
		})

		t.Run("AssignsIDAndCreatedAt", func(t *testing.T) {
			s := open(t)
			a := mustCreateAgent(t, s, "etl-bot")
			k := &broker.APIKey{AgentID: a.ID, Prefix: "stk_a", Hash: "h", ExpiresAt: at(time.Hour)}
			if err := s.CreateAPIKey(t.Context(), k); err != nil {
				t.Fatal(err)
			}
			if k.ID == "" || k.CreatedAt.IsZero() {
				t.Fatalf("after CreateAPIKey: %s; want id and created set", fmtAPIKey(k))
			}
		})

		t.Run("ErrConflictHash", func(t *testing.T) {
			s := open(t)
			a := mustCreateAgent(t, s, "etl-bot")
			k := newKey(a, 0)
			if err := s.CreateAPIKey(t.Context(), k); err != nil {
				t.Fatal(err)
			}
			dup := newKey(a, 1)
			dup.Hash = k.Hash
			wantError(t, s.CreateAPIKey(t.Context(), dup), broker.ECONFLICT, "")
		})

		t.Run("ErrNotFoundAgent", func(t *testing.T) {
			s := open(t)
			k := newKey(&broker.Agent{ID: newID(), Name: "ghost"}, 0)
			wantError(t, s.CreateAPIKey(t.Context(), k), broker.ENOTFOUND, "Agent not found.")
		})
	})

	t.Run("FindAgentByHash", func(t *testing.T) {
		t.Run("OK", func(t *testing.T) {
			s := open(t)
			mustCreateAgent(t, s, "other-bot")
			a := mustCreateAgent(t, s, "etl-bot")
			a, err := s.UpdateAgent(t.Context(), a.ID, broker.AgentUpdate{
				Labels: map[string]string{"team": "data"}, State: ptr(broker.AgentDisabled),
			})
			if err != nil {
				t.Fatal(err)
			}
			want := newKey(a, 0)
			want.RevokedAt = ptr(at(time.Hour)) // a revoked key and a disabled agent are still found
			if err := s.CreateAPIKey(t.Context(), want); err != nil {
				t.Fatal(err)
			}
			if err := s.CreateAPIKey(t.Context(), newKey(a, 1)); err != nil {
				t.Fatal(err)
			}
			gotKey, gotAgent, err := s.FindAgentByAPIKeyHash(t.Context(), want.Hash)
			if err != nil {
				t.Fatal(err)
			}
			if g, w := fmtAPIKey(gotKey), fmtAPIKey(want); g != w {
				t.Fatalf("key differs\ngot:  %s\nwant: %s", g, w)
			}
			if g, w := fmtAgent(gotAgent), fmtAgent(a); g != w {
				t.Fatalf("agent differs\ngot:  %s\nwant: %s", g, w)
			}
		})

		t.Run("ErrNotFound", func(t *testing.T) {
			s := open(t)
			a := mustCreateAgent(t, s, "etl-bot")
			if err := s.CreateAPIKey(t.Context(), newKey(a, 0)); err != nil {
				t.Fatal(err)
			}
			_, _, err := s.FindAgentByAPIKeyHash(t.Context(), "no-such-hash")
			wantError(t, err, broker.ENOTFOUND, "API key not found.")
		})
	})

	t.Run("Find", func(t *testing.T) {
		s := open(t)
		a := mustCreateAgent(t, s, "etl-bot")
		b := mustCreateAgent(t, s, "other-bot")
		var want []string
		for n := range 3 {
			k := newKey(a, n)
			if err := s.CreateAPIKey(t.Context(), k); err != nil {
				t.Fatal(err)
			}
			want = append([]string{k.ID}, want...) // newest first
			if err := s.CreateAPIKey(t.Context(), newKey(b, n)); err != nil {
				t.Fatal(err)
			}
		}

		t.Run("OK", func(t *testing.T) {
			keys, err := s.FindAPIKeys(t.Context(), a.ID)
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, k := range keys {
				got = append(got, k.ID)
				if k.AgentID != a.ID {
					t.Errorf("key %s belongs to %s, want %s", k.ID, k.AgentID, a.ID)
				}
			}
			if !slices.Equal(got, want) {
				t.Errorf("key ids = %v, want %v (newest first)", got, want)
			}
		})

		t.Run("UnknownAgent", func(t *testing.T) {
			keys, err := s.FindAPIKeys(t.Context(), newID())
			if err != nil {
				t.Fatal(err)
			}
			if len(keys) != 0 {
				t.Errorf("got %d keys, want none", len(keys))
			}
		})
	})

	t.Run("Revoke", func(t *testing.T) {
		s := open(t)
		a := mustCreateAgent(t, s, "etl-bot")
		b := mustCreateAgent(t, s, "other-bot")
		earlier := at(30 * time.Minute)
		old := newKey(a, 0)
		old.RevokedAt = &earlier
		for _, k := range []*broker.APIKey{old, newKey(a, 1), newKey(a, 2), newKey(b, 0)} {
			if err := s.CreateAPIKey(t.Context(), k); err != nil {
				t.Fatal(err)
			}
		}

		revokeAt := at(time.Hour)
		t.Run("OK", func(t *testing.T) {
			n, err := s.RevokeAPIKeys(t.Context(), a.ID, revokeAt)
			if err != nil {
				t.Fatal(err)
			}
			if got, want := n, 2; got != want {
				t.Errorf("revoked %d keys, want %d", got, want)
			}
			keys, err := s.FindAPIKeys(t.Context(), a.ID)
			if err != nil {
				t.Fatal(err)
			}
			for _, k := range keys {
				want := &revokeAt
				if k.ID == old.ID {
					want = &earlier // an already revoked key keeps its time
				}
				if got := fmtTime(k.RevokedAt); got != fmtTime(want) {
					t.Errorf("key %s revoked at %s, want %s", k.Prefix, got, fmtTime(want))
				}
				if k.Usable(revokeAt) {
					t.Errorf("key %s still usable", k.Prefix)
				}
			}
		})

		t.Run("Again", func(t *testing.T) {
			n, err := s.RevokeAPIKeys(t.Context(), a.ID, at(2*time.Hour))
			if err != nil {
				t.Fatal(err)
			}
			if n != 0 {
				t.Errorf("revoked %d keys again, want 0", n)
			}
		})

		t.Run("OtherAgentUntouched", func(t *testing.T) {
			keys, err := s.FindAPIKeys(t.Context(), b.ID)
			if err != nil {
				t.Fatal(err)
			}
			if len(keys) != 1 || keys[0].RevokedAt != nil {
				t.Errorf("other agent's keys = %v, want one unrevoked", keys)
			}
		})

		t.Run("UnknownAgent", func(t *testing.T) {
			n, err := s.RevokeAPIKeys(t.Context(), newID(), revokeAt)
			if err != nil {
				t.Fatal(err)
			}
			if n != 0 {
				t.Errorf("revoked %d keys, want 0", n)
			}
		})
	})
}

// mustFindAgent returns the stored agent with the name.
func mustFindAgent(tb testing.TB, s Store, name string) *broker.Agent {
	tb.Helper()
	a, err := s.FindAgentByName(tb.Context(), name)
	if err != nil {
		tb.Fatalf("FindAgentByName(%s): %v", name, err)
	}
	return a
}
