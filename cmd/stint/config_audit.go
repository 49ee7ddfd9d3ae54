package main

import (
	"crypto/ed25519"
	"errors"
	"fmt"
	"net/url"
	"os"

	"github.com/stint-broker/stint/broker/checkpoint"
)

// AuditConfig configures the audit log beyond its hash chain.
type AuditConfig struct {
	// Checkpoints makes the chain's head verifiable without the database
	// (README § Audit log: checkpoints).
	Checkpoints CheckpointsConfig `yaml:"checkpoints"`
}

// CheckpointsConfig configures signed audit checkpoints: the server signs
// the chain's head (seq, hash, time) with an Ed25519 key whenever it has
// moved, on Schedule, at start and at shutdown, and writes the checkpoint to
// File, to the log stream and to a webhook. `stint audit verify` and the
// console's verify then require the chain to hold every checkpoint and to be
// no shorter than the newest, which catches deleted newest events that the
// chain alone cannot show.
type CheckpointsConfig struct {
	// KeyFile is the Ed25519 private key (PKCS #8 PEM, mode 0600) the server
	// signs with; `stint audit keygen --out FILE` creates one. Setting it
	// turns checkpoints on (File is then required).
	KeyFile string `yaml:"key_file"`
	// PublicKeyFile is the public key (PEM) verification checks with;
	// default: KeyFile+".pub" if it exists (keygen writes it), else the
	// public half of KeyFile. Set it where verification runs without the
	// private key, and keep a copy of it off the server's host.
	PublicKeyFile string `yaml:"public_key_file"`
	// File is the checkpoint file: JSON lines, only ever appended to, and
	// what verification reads. Keep it off the database's host (a mount from
	// another host) or append-only (chattr +a).
	File string `yaml:"file"`
	// Schedule is the cron spec (seconds optional, UTC) of the checkpoint
	// job; default "@every 5m". A run with an unchanged head writes nothing.
	Schedule string `yaml:"schedule"`
	// Log also writes each checkpoint to the log stream (info, msg "audit
	// checkpoint"). Default true.
	Log bool `yaml:"log"`
	// Webhook, if set, POSTs each checkpoint as JSON.
	Webhook *CheckpointWebhookConfig `yaml:"webhook"`
}

// CheckpointWebhookConfig is a URL that receives each checkpoint.
type CheckpointWebhookConfig struct {
	// URL is https (http only for a loopback address).
	URL string `yaml:"url"`
	// TokenEnv, if set, names the environment variable whose value is sent
	// as "Authorization: Bearer"; the token itself is never configured.
	TokenEnv string `yaml:"token_env"`
}

// defaultAuditConfig is the audit part of DefaultConfig.
func defaultAuditConfig() AuditConfig {
	return AuditConfig{Checkpoints: CheckpointsConfig{Schedule: "@every 5m", Log: true}}
}

// Signs reports whether the server signs checkpoints.
func (c *CheckpointsConfig) Signs() bool { return c.KeyFile != "" }

// Verifies reports whether verification checks checkpoints.
func (c *CheckpointsConfig) Verifies() bool {
	return c.File != "" && (c.KeyFile != "" || c.PublicKeyFile != "")
}

// PublicKey loads the key that verifies checkpoints.
func (c *CheckpointsConfig) PublicKey() (ed25519.PublicKey, error) {
	path, key := c.PublicKeyFile, "audit.checkpoints.public_key_file"
	if path == "" {
		path, key = c.KeyFile, "audit.checkpoints.key_file"
		if _, err := os.Stat(c.KeyFile + ".pub"); err == nil {
			// Readable by operators who may not read the private key.
			path, key = c.KeyFile+".pub", "audit.checkpoints.key_file (its .pub)"
		}
	}
	pub, err := checkpoint.LoadPublicKey(path)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", key, err)
	}
	return pub, nil
}

// Validate checks the checkpoint settings.
func (c *CheckpointsConfig) Validate() error {
	switch {
	case c.KeyFile == "" && c.PublicKeyFile == "" && (c.File != "" || c.Webhook != nil):
		return errors.New("audit.checkpoints: file and webhook need key_file, the Ed25519 key checkpoints are signed with (stint audit keygen --out FILE creates one)")
	case (c.KeyFile != "" || c.PublicKeyFile != "") && c.File == "":
		return errors.New("audit.checkpoints.file is required with a checkpoint key: the append-only file checkpoints are written to and verified from")
	}
	if c.Signs() {
		if _, err := cronParser.Parse(c.Schedule); err != nil {
			return fmt.Errorf("audit.checkpoints.schedule %q: %w", c.Schedule, err)
		}
	}
	if w := c.Webhook; w != nil {
		u, err := url.Parse(w.URL)
		if err != nil || u.Host == "" || (u.Scheme != "https" && !(u.Scheme == "http" && isLoopbackHost(u.Hostname()))) {
			return fmt.Errorf("audit.checkpoints.webhook.url must be an https URL (http only for a loopback address), not %q", w.URL)
		}
		if w.TokenEnv != "" && os.Getenv(w.TokenEnv) == "" {
			return fmt.Errorf("audit.checkpoints.webhook.token_env: the environment variable %s is not set", w.TokenEnv)
		}
	}
	return nil
}
