// Package migrations holds the numbered SQL migrations of the attestboot Postgres inventory, in
// goose format (NNNN_name.sql with "-- +goose Up" and "-- +goose Down" sections), embedded so
// every binary carries the schema it was built against. The runner lives in services/inventory;
// this module deliberately has no dependencies so anything can import it.
package migrations

import "embed"

// FS holds every migration file at its root, named NNNN_name.sql.
//
//go:embed *.sql
var FS embed.FS
