package sqlite

// GroupStats returns how many group commits ran and how many writes they
// held, so tests can tell that writes were in fact grouped.
func GroupStats(db *DB) (groups, writes int64) {
	return db.groups.Load(), db.groupedWrites.Load()
}

// LeaseCreatedDetails exposes leaseCreatedDetails to the external tests.
var LeaseCreatedDetails = leaseCreatedDetails

// Checkpoints returns how many background checkpoints ran.
func Checkpoints(db *DB) int64 { return db.ckptStats.Load() }
