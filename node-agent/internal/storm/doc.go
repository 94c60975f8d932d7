// Package storm is the boot-storm measurement behind make bench: it runs the simulator
// (internal/sim) in-process against a running stack and, around the storm, measures what the
// servers paid for it — CPU per node of each service and of Postgres (from /proc), Postgres
// transactions and rows written per node (pg_stat_database, pg_stat_statements when loaded),
// the gateway's peak peer count and each service's peak memory — and draws the nodes completed
// over time, per phase, as an SVG chart.
package storm
