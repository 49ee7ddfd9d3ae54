// Drives Stint's token endpoint with openid-client, as a third-party agent
// would: discovery (RFC 8414), then client_credentials with
// client_secret_basic, client_secret_post and private_key_jwt, each with good
// and bad credentials. It prints one JSON object per case on stdout; the Go
// test (e2e_oauth_interop_test.go) judges them.
//
// Usage: node interop.mjs CONFIG.json
// CONFIG: {"issuer": "...", "client_id": "...", "client_secret": "...",
//          "jwk": {private EC P-256 JWK}, "kid": "...", "wrong_jwk": {...}}
// The server's CA comes from NODE_EXTRA_CA_CERTS.
import { readFile } from 'node:fs/promises'
import * as client from 'openid-client'

const cfg = JSON.parse(await readFile(process.argv[2], 'utf8'))
const issuer = new URL(cfg.issuer)

const importKey = (jwk) =>
  crypto.subtle.importKey('jwk', jwk, { name: 'ECDSA', namedCurve: 'P-256' }, false, ['sign'])

// describe turns an openid-client error into what the test checks: the
// class, the HTTP status, the RFC 6749 §5.2 body and any challenge.
async function describe(err) {
  const out = { name: err?.name, message: err?.message, code: err?.code, status: err?.status }
  if (err instanceof client.ResponseBodyError) {
    out.error = err.error
    out.error_description = err.error_description
  }
  if (err instanceof client.WWWAuthenticateChallengeError) {
    out.challenges = err.cause.map((c) => c.scheme)
    // The body is still there for a client that reads it.
    try {
      const body = await err.response.json()
      out.error = body.error
      out.error_description = body.error_description
    } catch (e) {
      out.body_error = String(e)
    }
  }
  return out
}

async function run(name, auth) {
  try {
    const config = await client.discovery(issuer, cfg.client_id, undefined, auth, { algorithm: 'oauth2' })
    const tokens = await client.clientCredentialsGrant(config)
    return { case: name, ok: true, access_token: tokens.access_token, token_type: tokens.token_type, expires_in: tokens.expires_in }
  } catch (err) {
    return { case: name, ok: false, ...(await describe(err)) }
  }
}

const key = await importKey(cfg.jwk)
const wrongKey = await importKey(cfg.wrong_jwk)
const cases = [
  ['client_secret_basic', client.ClientSecretBasic(cfg.client_secret)],
  ['client_secret_post', client.ClientSecretPost(cfg.client_secret)],
  ['private_key_jwt', client.PrivateKeyJwt({ key, kid: cfg.kid })],
  ['client_secret_basic_wrong', client.ClientSecretBasic(cfg.client_secret + 'x')],
  ['client_secret_post_wrong', client.ClientSecretPost(cfg.client_secret + 'x')],
  ['private_key_jwt_wrong', client.PrivateKeyJwt({ key: wrongKey, kid: cfg.kid })],
]
for (const [name, auth] of cases) {
  console.log(JSON.stringify(await run(name, auth)))
}
