package inventory

// Hooks for the external test package.
var (
	// MigrateUpFS and MigrateDownFS run the migration runner over a test file system.
	MigrateUpFS   = migrateUp
	MigrateDownFS = migrateDown
	// DBError maps a raw driver error the way store methods do, for tests that exercise the
	// schema with SQL the store does not (yet) offer.
	DBError = dbError
)
