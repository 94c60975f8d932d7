// Package proto holds attestboot's protobuf APIs and the Go code generated from them
// (attestboot/<service>/v1). Run `make generate` after editing a .proto file.
package proto
