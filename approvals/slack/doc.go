// Package slack connects human approval to Slack, and is the only package
// that imports slack-go.
//
// It posts one Block Kit message per lease that needs approval to the role's
// channel (slack.channels, else slack.default_channel) showing the agent, its
// owner, the role and its sensitivity, the window, task, justification, risk
// score, policy reasons and the approvals needed and given, with Approve and
// Deny buttons. Each button's value is "<lease id>:<digest>", binding the
// click to the request exactly as shown. The message is rewritten (chat.update)
// on every change of the lease — each approval, approved, denied, timed out,
// canceled, activated, expired, released, revoked, lapsed — and the agent's
// owner gets a direct message for each state change. Delivery goes through
// the approvals package's durable outbox, so nothing is lost while Slack is
// unreachable.
//
// Clicks arrive either at POST /slack/interactions (ServeHTTP: the v0
// signature is verified over the raw body before anything is parsed, and
// timestamps more than 5 minutes away are refused) or over Socket Mode
// (RunSocketMode, for installs without a public URL); both take the same
// path, Interact, to approvals' one decision function. Approve records an
// approval at once. Deny opens a modal asking for an optional reason and
// records the denial when the modal is submitted. A refused or repeated
// click gets an ephemeral reply saying why. Slack users map to approvers by
// their configured slack_user_id, else by the email users.info reports.
package slack
