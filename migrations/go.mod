module github.com/attestboot/attestboot/migrations

go 1.26
