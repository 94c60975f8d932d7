package inventory

import (
	"bufio"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/attestboot/attestboot/migrations"
)

// MigrationLockKey is the session-level advisory lock (pg_advisory_lock) held while migrations
// run, so that service replicas starting together apply each migration exactly once: the
// others wait, then find nothing left to do. It spells "attestmg" in ASCII.
const MigrationLockKey int64 = 0x6174746573746d67

// Migration is one parsed migration file (goose format).
type Migration struct {
	Version int64  // the NNNN prefix of the file name
	Name    string // the file name without prefix and extension
	Up      string // SQL of the "-- +goose Up" section
	Down    string // SQL of the "-- +goose Down" section; empty means nothing to undo
	// NoTransaction is set by "-- +goose NO TRANSACTION": the statements run one by one outside
	// a transaction (CREATE INDEX CONCURRENTLY needs that).
	NoTransaction bool

	upLine, downLine int // 1-based line of the first line of each section, for error messages
}

// MigrationState is the state of one migration in a database.
type MigrationState struct {
	Version   int64
	Name      string
	Applied   bool
	AppliedAt time.Time // zero unless Applied
	// Unknown is set for a version recorded in the database that this binary does not carry
	// (the database was migrated by a newer release).
	Unknown bool
}

const createSchemaMigrations = `
CREATE TABLE IF NOT EXISTS schema_migrations (
    version    bigint PRIMARY KEY,
    name       text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)`

// Migrate applies every migration of the embedded schema that the database lacks, in version
// order, each in its own transaction, under MigrationLockKey. It returns how many it applied.
func Migrate(ctx context.Context, pool *pgxpool.Pool) (applied int, err error) {
	return migrateUp(ctx, pool, migrations.FS)
}

// MigrateDown reverts applied migrations newer than toVersion, newest first, each in its own
// transaction, under MigrationLockKey. MigrateDown(ctx, pool, 0) empties the schema. It
// returns how many it reverted.
func MigrateDown(ctx context.Context, pool *pgxpool.Pool, toVersion int64) (reverted int, err error) {
	return migrateDown(ctx, pool, migrations.FS, toVersion)
}

// MigrationStatus lists the embedded migrations and whether each is applied, followed by any
// applied version this binary does not know.
func MigrationStatus(ctx context.Context, pool *pgxpool.Pool) ([]MigrationState, error) {
	return migrationStatus(ctx, pool, migrations.FS)
}

// LoadMigrations parses every NNNN_name.sql file at the root of fsys, sorted by version.
func LoadMigrations(fsys fs.FS) ([]Migration, error) {
	entries, err := fs.ReadDir(fsys, ".")
	if err != nil {
		return nil, fmt.Errorf("read migrations: %w", err)
	}
	var ms []Migration
	seen := map[int64]string{}
	for _, e := range entries {
		if e.IsDir() || path.Ext(e.Name()) != ".sql" {
			continue
		}
		src, err := fs.ReadFile(fsys, e.Name())
		if err != nil {
			return nil, fmt.Errorf("read migration %s: %w", e.Name(), err)
		}
		m, err := parseMigration(e.Name(), string(src))
		if err != nil {
			return nil, err
		}
		if other, dup := seen[m.Version]; dup {
			return nil, fmt.Errorf("migrations %s and %s share version %d", other, e.Name(), m.Version)
		}
		seen[m.Version] = e.Name()
		ms = append(ms, m)
	}
	slices.SortFunc(ms, func(a, b Migration) int { return cmp.Compare(a.Version, b.Version) })
	return ms, nil
}

var migrationFileName = regexp.MustCompile(`^([0-9]+)_([A-Za-z0-9_]+)\.sql$`)

const goosePrefix = "-- +goose "

// parseMigration reads one goose-format file. Only the annotations this project uses are
// accepted; anything else (ENVSUB, misspellings) is an error rather than silently ignored.
func parseMigration(file, src string) (Migration, error) {
	match := migrationFileName.FindStringSubmatch(file)
	if match == nil {
		return Migration{}, fmt.Errorf("migration file %q: name must be NNNN_name.sql", file)
	}
	version, err := strconv.ParseInt(match[1], 10, 64)
	if err != nil || version <= 0 {
		return Migration{}, fmt.Errorf("migration file %q: version must be a positive integer", file)
	}
	m := Migration{Version: version, Name: match[2]}

	const (
		preamble = iota
		up
		down
	)
	section := preamble
	var upLines, downLines []string
	inBlock := false
	sc := bufio.NewScanner(strings.NewReader(src))
	sc.Buffer(make([]byte, 64*1024), 16*1024*1024)
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		fail := func(format string, args ...any) error {
			return fmt.Errorf("migration %s line %d: %s", file, n, fmt.Sprintf(format, args...))
		}
		if ann, ok := strings.CutPrefix(strings.TrimSpace(line), goosePrefix); ok {
			switch strings.TrimSpace(ann) {
			case "Up":
				if section != preamble {
					return Migration{}, fail("unexpected Up section")
				}
				section, m.upLine = up, n+1
				continue
			case "Down":
				if section != up || inBlock {
					return Migration{}, fail("Down section must follow a complete Up section")
				}
				section, m.downLine = down, n+1
				continue
			case "StatementBegin":
				if section == preamble || inBlock {
					return Migration{}, fail("unexpected StatementBegin")
				}
				inBlock = true
			case "StatementEnd":
				if !inBlock {
					return Migration{}, fail("StatementEnd without StatementBegin")
				}
				inBlock = false
			case "NO TRANSACTION":
				m.NoTransaction = true
			default:
				return Migration{}, fail("unsupported goose annotation %q", ann)
			}
		}
		switch section {
		case preamble:
			if t := strings.TrimSpace(line); t != "" && !strings.HasPrefix(t, "--") {
				return Migration{}, fail("SQL before the Up section")
			}
		case up:
			upLines = append(upLines, line)
		case down:
			downLines = append(downLines, line)
		}
	}
	if err := sc.Err(); err != nil {
		return Migration{}, fmt.Errorf("migration %s: %w", file, err)
	}
	if section == preamble {
		return Migration{}, fmt.Errorf("migration %s: no \"-- +goose Up\" section", file)
	}
	if inBlock {
		return Migration{}, fmt.Errorf("migration %s: StatementBegin without StatementEnd", file)
	}
	m.Up = strings.Join(upLines, "\n")
	m.Down = strings.Join(downLines, "\n")
	if !hasSQL(m.Up) {
		return Migration{}, fmt.Errorf("migration %s: empty Up section", file)
	}
	return m, nil
}

// hasSQL reports whether s holds anything besides blank lines and "--" comments.
func hasSQL(s string) bool {
	for line := range strings.Lines(s) {
		if t := strings.TrimSpace(line); t != "" && !strings.HasPrefix(t, "--") {
			return true
		}
	}
	return false
}

// splitStatements splits a section the way goose does for NO TRANSACTION migrations, which
// Postgres cannot run as one multi-statement query (that is an implicit transaction): a
// statement ends at a line ending in ";" outside StatementBegin/StatementEnd, or at
// StatementEnd. Each statement keeps its 1-based starting line.
func splitStatements(section string, firstLine int) ([]statement, error) {
	var (
		out     []statement
		buf     []string
		start   int
		inBlock bool
	)
	flush := func() {
		s := strings.Join(buf, "\n")
		if hasSQL(s) {
			out = append(out, statement{sql: s, line: start})
		}
		buf = nil
	}
	for i, line := range strings.Split(section, "\n") {
		if len(buf) == 0 {
			start = firstLine + i
		}
		if ann, ok := strings.CutPrefix(strings.TrimSpace(line), goosePrefix); ok {
			switch strings.TrimSpace(ann) {
			case "StatementBegin":
				flush()
				start = firstLine + i + 1
				inBlock = true
			case "StatementEnd":
				inBlock = false
				flush()
			}
			continue
		}
		buf = append(buf, line)
		if !inBlock && strings.HasSuffix(strings.TrimSpace(stripLineComment(line)), ";") {
			flush()
		}
	}
	if hasSQL(strings.Join(buf, "\n")) {
		return nil, fmt.Errorf("statement starting at line %d does not end with ';'", start)
	}
	return out, nil
}

type statement struct {
	sql  string
	line int
}

// stripLineComment drops a trailing "-- comment". It does not parse string literals, exactly
// like goose, so a "--" inside a literal at the end of a line needs StatementBegin/End.
func stripLineComment(line string) string {
	if i := strings.Index(line, "--"); i >= 0 {
		return line[:i]
	}
	return line
}

func migrateUp(ctx context.Context, pool *pgxpool.Pool, fsys fs.FS) (applied int, err error) {
	all, err := LoadMigrations(fsys)
	if err != nil {
		return 0, err
	}
	err = withMigrationLock(ctx, pool, func(conn *pgx.Conn) error {
		done, err := appliedMigrations(ctx, conn)
		if err != nil {
			return err
		}
		var newest int64
		for v := range done {
			newest = max(newest, v)
		}
		for _, m := range all {
			if _, ok := done[m.Version]; ok {
				continue
			}
			if m.Version < newest {
				return fmt.Errorf("migration %04d_%s is pending but %d is already applied: refusing to apply out of order", m.Version, m.Name, newest)
			}
			if err := applyMigration(ctx, conn, m, m.Up, m.upLine, false); err != nil {
				return err
			}
			applied++
		}
		return nil
	})
	return applied, err
}

func migrateDown(ctx context.Context, pool *pgxpool.Pool, fsys fs.FS, toVersion int64) (reverted int, err error) {
	all, err := LoadMigrations(fsys)
	if err != nil {
		return 0, err
	}
	known := make(map[int64]Migration, len(all))
	for _, m := range all {
		known[m.Version] = m
	}
	err = withMigrationLock(ctx, pool, func(conn *pgx.Conn) error {
		done, err := appliedMigrations(ctx, conn)
		if err != nil {
			return err
		}
		versions := make([]int64, 0, len(done))
		for v := range done {
			if v > toVersion {
				versions = append(versions, v)
			}
		}
		slices.Sort(versions)
		slices.Reverse(versions)
		for _, v := range versions {
			m, ok := known[v]
			if !ok {
				return fmt.Errorf("migration %d is applied but not embedded in this binary: cannot revert it", v)
			}
			if err := applyMigration(ctx, conn, m, m.Down, m.downLine, true); err != nil {
				return err
			}
			reverted++
		}
		return nil
	})
	return reverted, err
}

func migrationStatus(ctx context.Context, pool *pgxpool.Pool, fsys fs.FS) ([]MigrationState, error) {
	all, err := LoadMigrations(fsys)
	if err != nil {
		return nil, err
	}
	if _, err := pool.Exec(ctx, createSchemaMigrations); err != nil {
		return nil, fmt.Errorf("create schema_migrations: %w", err)
	}
	rows, err := pool.Query(ctx, `SELECT version, name, applied_at FROM schema_migrations ORDER BY version`)
	if err != nil {
		return nil, fmt.Errorf("read schema_migrations: %w", err)
	}
	recorded, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (MigrationState, error) {
		var st MigrationState
		err := row.Scan(&st.Version, &st.Name, &st.AppliedAt)
		st.AppliedAt = st.AppliedAt.UTC()
		return st, err
	})
	if err != nil {
		return nil, fmt.Errorf("read schema_migrations: %w", err)
	}
	byVersion := make(map[int64]MigrationState, len(recorded))
	for _, r := range recorded {
		byVersion[r.Version] = r
	}
	out := make([]MigrationState, 0, len(all))
	for _, m := range all {
		st := MigrationState{Version: m.Version, Name: m.Name}
		if r, ok := byVersion[m.Version]; ok {
			st.Applied, st.AppliedAt = true, r.AppliedAt
			delete(byVersion, m.Version)
		}
		out = append(out, st)
	}
	for _, r := range recorded {
		if _, unknown := byVersion[r.Version]; unknown {
			out = append(out, MigrationState{Version: r.Version, Name: r.Name, Applied: true, AppliedAt: r.AppliedAt, Unknown: true})
		}
	}
	return out, nil
}

// withMigrationLock runs fn on one dedicated connection holding the session-level advisory
// lock. A session lock (not a transaction lock) is needed because every migration commits on
// its own while the lock must span all of them.
func withMigrationLock(ctx context.Context, pool *pgxpool.Pool, fn func(*pgx.Conn) error) (err error) {
	c, err := pool.Acquire(ctx)
	if err != nil {
		return fmt.Errorf("migrate: acquire connection: %w", err)
	}
	if _, err := c.Exec(ctx, `SELECT pg_advisory_lock($1)`, MigrationLockKey); err != nil {
		c.Release()
		return fmt.Errorf("migrate: take advisory lock %d: %w", MigrationLockKey, err)
	}
	defer func() {
		// Unlock even when ctx has ended. If that fails, closing the session releases the
		// lock: a connection still holding it must never go back to the pool.
		uctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		if _, uerr := c.Exec(uctx, `SELECT pg_advisory_unlock($1)`, MigrationLockKey); uerr != nil {
			_ = c.Conn().Close(uctx)
		}
		c.Release()
	}()
	if _, err := c.Exec(ctx, createSchemaMigrations); err != nil {
		return fmt.Errorf("migrate: create schema_migrations: %w", err)
	}
	return fn(c.Conn())
}

func appliedMigrations(ctx context.Context, conn *pgx.Conn) (map[int64]struct{}, error) {
	rows, err := conn.Query(ctx, `SELECT version FROM schema_migrations`)
	if err != nil {
		return nil, fmt.Errorf("migrate: read schema_migrations: %w", err)
	}
	versions, err := pgx.CollectRows(rows, pgx.RowTo[int64])
	if err != nil {
		return nil, fmt.Errorf("migrate: read schema_migrations: %w", err)
	}
	done := make(map[int64]struct{}, len(versions))
	for _, v := range versions {
		done[v] = struct{}{}
	}
	return done, nil
}

// applyMigration runs one section (Up, or Down when down is set) and records the result in
// schema_migrations, in one transaction unless the migration opted out.
func applyMigration(ctx context.Context, conn *pgx.Conn, m Migration, sql string, firstLine int, down bool) error {
	dir := "up"
	if down {
		dir = "down"
	}
	record := func(ctx context.Context, db dbtx) error {
		var err error
		if down {
			_, err = db.Exec(ctx, `DELETE FROM schema_migrations WHERE version = $1`, m.Version)
		} else {
			_, err = db.Exec(ctx, `INSERT INTO schema_migrations (version, name) VALUES ($1, $2)`, m.Version, m.Name)
		}
		return err
	}
	wrap := func(err error) error {
		return fmt.Errorf("migration %04d_%s (%s): %w", m.Version, m.Name, dir, err)
	}

	if m.NoTransaction {
		stmts, err := splitStatements(sql, firstLine)
		if err != nil {
			return wrap(err)
		}
		for _, s := range stmts {
			if err := execSimple(ctx, conn.PgConn(), s.sql, s.line); err != nil {
				return wrap(err)
			}
		}
		if err := record(ctx, conn); err != nil {
			return wrap(err)
		}
		return nil
	}

	tx, err := conn.Begin(ctx)
	if err != nil {
		return wrap(err)
	}
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()
	if hasSQL(sql) {
		if err := execSimple(ctx, conn.PgConn(), sql, firstLine); err != nil {
			return wrap(err)
		}
	}
	if err := record(ctx, tx); err != nil {
		return wrap(err)
	}
	if err := tx.Commit(ctx); err != nil {
		return wrap(err)
	}
	return nil
}

// execSimple sends sql through the simple query protocol, which accepts several statements
// (and dollar-quoted function bodies) in one round trip. A server error is reported with the
// file line it points at.
func execSimple(ctx context.Context, conn *pgconn.PgConn, sql string, firstLine int) error {
	_, err := conn.Exec(ctx, sql).ReadAll()
	if err == nil {
		return nil
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Position > 0 {
		return fmt.Errorf("line %d: %w", firstLine+lineOfPosition(sql, int(pgErr.Position)), err)
	}
	return fmt.Errorf("section starting at line %d: %w", firstLine, err)
}

// lineOfPosition converts a Postgres error position (1-based, in characters) into a 0-based
// line offset within sql.
func lineOfPosition(sql string, pos int) int {
	line, chars := 0, 0
	for _, r := range sql {
		chars++
		if chars >= pos {
			break
		}
		if r == '\n' {
			line++
		}
	}
	return line
}
