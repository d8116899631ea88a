//go:build tools

// Package aerogate pins the modules the packages are being built on while they land.
package aerogate

import (
	_ "github.com/dgraph-io/ristretto/v2"
	_ "github.com/fasthttp/router"
	_ "github.com/golang-jwt/jwt/v5"
	_ "github.com/google/uuid"
	_ "github.com/jackc/pgx/v5"
	_ "github.com/jackc/pgx/v5/pgxpool"
	_ "github.com/jackc/tern/v2/migrate"
	_ "github.com/knadh/koanf/parsers/yaml"
	_ "github.com/knadh/koanf/providers/env/v2"
	_ "github.com/knadh/koanf/providers/file"
	_ "github.com/knadh/koanf/providers/posflag"
	_ "github.com/knadh/koanf/v2"
	_ "github.com/segmentio/kafka-go"
	_ "github.com/spf13/pflag"
	_ "github.com/twmb/franz-go/pkg/kfake"
	_ "github.com/twmb/franz-go/pkg/kgo"
	_ "github.com/valyala/fasthttp"
	_ "golang.org/x/sync/singleflight"
	_ "golang.org/x/sync/errgroup"
	_ "golang.org/x/time/rate"
)
