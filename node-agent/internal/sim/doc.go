// Package sim is the many-node simulator behind the nodesim command: N simulated nodes in one
// process, each with its own TPM (a swtpm process, or beyond a thousand nodes an in-process
// services/softtpm) and its own netstack WireGuard end, running the node-agent's
// own boot code (internal/agent) against the real services, and a report of per-phase latency
// percentiles, throughput and failures by class and reason for boot-storm measurements.
package sim
