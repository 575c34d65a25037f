module github.com/veneur/veneur

go 1.26.8

require (
	github.com/DataDog/datadog-go/v5 v5.9.1
	github.com/axiomhq/hyperloglog v0.3.0
	github.com/getsentry/sentry-go v0.50.0
	github.com/klauspost/compress v1.20.4
	github.com/sirupsen/logrus v1.10.2
	github.com/zenazn/goji v1.0.1
	golang.org/x/sys v0.50.0
	gopkg.in/yaml.v2 v2.4.0
)

require (
	github.com/Microsoft/go-winio v0.5.0 // indirect
	github.com/dgryski/go-metro v0.0.0-20250106013310-edb8663e5e33 // indirect
	github.com/kamstrup/intmap v0.5.2 // indirect
	github.com/kr/text v0.2.0 // indirect
	golang.org/x/text v0.41.0 // indirect
)
