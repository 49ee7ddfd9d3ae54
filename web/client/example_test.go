package client_test

import (
	"context"
	"errors"
	"fmt"
	"log"

	"github.com/stint-broker/stint/web/client"
)

// An agent asks for a database login, uses it, and releases it when its
// task is done.
func Example() {
	ctx := context.Background()
	c, err := client.New(serverURL, client.WithAPIKey(agentKey))
	if err != nil {
		log.Fatal(err)
	}
	lease, err := c.RequestLease(ctx, client.LeaseRequest{
		Role:          "db-readonly",
		TTL:           "5m",
		Task:          "nightly report",
		Justification: "REP-7",
	})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("state:", lease.State)
	user, _ := lease.Credential.Field("username")
	password, _ := lease.Credential.Field("password")
	host, _ := lease.Credential.Field("host")
	fmt.Println("host:", host)
	fmt.Println("can log in:", canLogIn(user, password) == nil)

	// Printing the lease never shows the secret.
	fmt.Println("credential:", lease.Credential)

	released, err := c.ReleaseLease(ctx, lease.ID)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("state:", released.State)
	fmt.Println("can log in:", canLogIn(user, password) == nil)
	// Output:
	// state: active
	// host: 127.0.0.1
	// can log in: true
	// credential: [credential redacted]
	// state: released
	// can log in: false
}

// A role that needs a human: the agent waits with long polls while an
// approver decides, then activates the lease to mint its credential.
func ExampleClient_AwaitDecision() {
	ctx := context.Background()
	agent, err := client.New(serverURL, client.WithAPIKey(agentKey))
	if err != nil {
		log.Fatal(err)
	}
	approver, err := client.New(serverURL, client.WithAPIKey(approverToken))
	if err != nil {
		log.Fatal(err)
	}

	lease, err := agent.RequestLease(ctx, client.LeaseRequest{Role: "vault-token", TTL: "5m", Task: "rotate a secret"})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("requested:", lease.State)

	go func() {
		// The approver sees what waits and answers with its digest.
		pending, err := approver.Approvals(ctx)
		if err != nil {
			log.Fatal(err)
		}
		for _, p := range pending {
			if p.Lease.ID == lease.ID {
				if _, err := approver.Approve(ctx, p.Lease.ID, p.Digest); err != nil {
					log.Fatal(err)
				}
			}
		}
	}()

	decided, err := agent.AwaitDecision(ctx, lease.ID, nil)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("decided:", decided.State)

	active, err := agent.ActivateLease(ctx, lease.ID)
	if err != nil {
		log.Fatal(err)
	}
	token, _ := active.Credential.Field("token")
	fmt.Println("activated:", active.State, "with a token:", token != "")

	if _, err := agent.ReleaseLease(ctx, lease.ID); err != nil {
		log.Fatal(err)
	}
	// Output:
	// requested: pending
	// decided: approved
	// activated: active with a token: true
}

// Every error answer is a *client.Error with the API's code.
func ExampleError() {
	c, err := client.New(serverURL, client.WithAPIKey(agentKey))
	if err != nil {
		log.Fatal(err)
	}
	_, err = c.RequestLease(context.Background(), client.LeaseRequest{Role: "no-such-role", Task: "t"})
	var e *client.Error
	if errors.As(err, &e) {
		fmt.Println(e.Status, e.Code, e.Field)
	}

	wrong, _ := client.New(serverURL, client.WithAPIKey("stint_ak_not-a-key"))
	_, err = wrong.Roles(context.Background())
	fmt.Println(client.IsCode(err, client.CodeUnauthorized))
	// Output:
	// 400 invalid role
	// true
}

// Every lease of one task ends in one call when the task is done: the
// active lease's credential is revoked, the one still waiting for an
// approver is withdrawn.
func ExampleClient_ReleaseTask() {
	ctx := context.Background()
	c, err := client.New(serverURL, client.WithAPIKey(agentKey))
	if err != nil {
		log.Fatal(err)
	}
	const task = "ticket REP-9/backfill"
	db, err := c.RequestLease(ctx, client.LeaseRequest{Role: "db-readonly", TTL: "5m", Task: task})
	if err != nil {
		log.Fatal(err)
	}
	if _, err := c.RequestLease(ctx, client.LeaseRequest{Role: "vault-token", TTL: "5m", Task: task}); err != nil {
		log.Fatal(err)
	}
	user, _ := db.Credential.Field("username")
	password, _ := db.Credential.Field("password")

	ended, err := c.ReleaseTask(ctx, task)
	if err != nil {
		log.Fatal(err)
	}
	for _, l := range ended.Leases {
		fmt.Println(l.Role, l.State)
	}
	fmt.Println("done:", ended.Done())
	fmt.Println("can log in:", canLogIn(user, password) == nil)
	// Unordered output:
	// db-readonly released
	// vault-token canceled
	// done: true
	// can log in: false
}
