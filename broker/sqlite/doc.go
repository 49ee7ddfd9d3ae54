// Package sqlite is Stint's embedded store: it implements broker.AgentStore
// and broker.LeaseStore on a single SQLite file (modernc.org/sqlite, no cgo).
//
// SQLite allows one writer at a time, so a DB holds two pools: a writer with
// exactly one connection whose transactions begin IMMEDIATE (they take the
// write lock up front and queue on busy_timeout instead of failing with
// SQLITE_BUSY when they try to upgrade a read lock), and a query_only reader
// pool. The file runs in WAL mode, so readers never block the writer.
//
// Times are stored as INTEGER unix nanoseconds in UTC and read back in UTC.
// Open applies the embedded migrations (package migrations) and refuses a
// database whose schema is newer than the binary.
//
// The store holds no business rules: the leases and approvals packages decide
// what may change; the store makes each change atomic with its history.
package sqlite
