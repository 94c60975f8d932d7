// Package dist holds the files that put node-agent into a diskless node image — its systemd
// units for the two supported orderings against cloud-init, the environment file, the script
// that runs cloud-init's stages and cloud-init's datasource configuration — embedded so that
// image tooling and tests read the very files that ship. docs/diskless-image.md explains them.
package dist

import "embed"

// Files are the shipped files, by their names in this directory.
//
//go:embed attestboot-node-agent.service attestboot-node-agent-seed.service node-agent.env cloud-init-stages 90-attestboot.cfg
var Files embed.FS
