module github.com/stint-broker/stint

go 1.26.0
