package migrations

import "embed"

// FS holds the migration files: sqlite/NNNN_what.sql and
// postgres/NNNN_what.sql. Stores pass the
// dialect's directory to goose through fs.Sub.
//
//go:embed sqlite/*.sql postgres/*.sql
var FS embed.FS
