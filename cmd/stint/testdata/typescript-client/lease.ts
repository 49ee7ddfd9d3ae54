// Requests a lease and releases it through a client generated from Stint's
// OpenAPI document:
//
//   npx openapi-typescript "$STINT_ADDR/openapi.json" -o stint.d.ts
//   npx tsc -p . && node dist/lease.js
//
// STINT_ADDR is the server, STINT_KEY the agent's API key. It prints one
// JSON line: the lease as requested (with its credential) and as released.
import createClient from "openapi-fetch";
import type { paths } from "./stint.js";

const stint = createClient<paths>({
  baseUrl: process.env.STINT_ADDR,
  headers: { Authorization: `Bearer ${process.env.STINT_KEY}` },
});

const { data: lease, error } = await stint.POST("/v1/leases", {
  body: { role: "db-readonly", ttl: "5m", task: "nightly report", justification: "REP-7" },
});
if (error) {
  throw new Error(`request refused: ${error.error.code}: ${error.error.message}`);
}
const credential = lease.credential;

const released = await stint.DELETE("/v1/leases/{id}", {
  params: { path: { id: lease.id } },
});
if (released.error) {
  throw new Error(`release refused: ${released.error.error.message}`);
}

console.log(JSON.stringify({
  id: lease.id,
  state: lease.state,
  username: credential?.username,
  password: credential?.password,
  released: released.data.state,
}));
