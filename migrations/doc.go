// Package migrations holds Stint's database schema as numbered SQL files, one
// directory per dialect, embedded in the binary and applied in order by the
// store's Open.
//
// The files use goose's format: a "-- +goose Up" section, with statements that
// contain semicolons (triggers) wrapped in "-- +goose StatementBegin/End".
// goose runs each file and records its version in one transaction. A migration
// that has shipped is never edited: change the schema with a new file.
//
// There is deliberately no "-- +goose Down" section: lease history is never
// deleted, and a down migration would be a way to delete it.
package migrations
