module github.com/attestboot/attestboot/metadata

go 1.26.7

require (
	github.com/attestboot/attestboot/migrations v0.0.0
	github.com/attestboot/attestboot/proto v0.0.0
	github.com/attestboot/attestboot/services v0.0.0
)

require go.yaml.in/yaml/v3 v3.0.6 // indirect

replace github.com/attestboot/attestboot/proto => ../proto

replace github.com/attestboot/attestboot/services => ../services

replace github.com/attestboot/attestboot/migrations => ../migrations
