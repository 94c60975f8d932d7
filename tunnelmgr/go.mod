module github.com/attestboot/attestboot/tunnelmgr

go 1.26

require (
	github.com/attestboot/attestboot/migrations v0.0.0
	github.com/attestboot/attestboot/proto v0.0.0
	github.com/attestboot/attestboot/services v0.0.0
)

replace github.com/attestboot/attestboot/proto => ../proto

replace github.com/attestboot/attestboot/services => ../services

replace github.com/attestboot/attestboot/migrations => ../migrations
