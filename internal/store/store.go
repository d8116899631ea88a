// Package store opens aerogate's Postgres pool and applies its embedded, versioned
// migrations (jackc/tern).
package store

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"io/fs"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/tern/v2/migrate"
)

//go:embed migrations/*.sql
var migrationFiles embed.FS

// VersionTable is the table in which tern records the applied migration version.
const VersionTable = "public.aerogate_schema_version"

// Migrations returns the embedded migration files (NNN_name.sql at the root).
func Migrations() fs.FS {
	sub, err := fs.Sub(migrationFiles, "migrations")
	if err != nil {
		// fs.Sub only fails for an invalid path, and "migrations" is a constant.
		panic(err)
	}
	return sub
}

// Open connects a pool to url and pings it. maxConns ≤ 0 keeps pgx's default.
func Open(ctx context.Context, url string, maxConns int) (*pgxpool.Pool, error) {
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		// pgconn redacts passwords from its parse errors.
		return nil, fmt.Errorf("parsing database url: %w", err)
	}
	if maxConns > 0 {
		cfg.MaxConns = int32(min(maxConns, 1<<20))
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("opening database pool: %w", err)
	}
	if err := pool.Ping(ctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("pinging database %s: %w", cfg.ConnConfig.Database, err)
	}
	return pool, nil
}

// Migrate applies every embedded migration not yet applied to the database at url.
//
// Concurrent callers are safe: tern holds a Postgres advisory lock while it creates its
// version table and while it migrates, so a second process waits and then finds nothing
// left to do.
func Migrate(ctx context.Context, url string) error {
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		return fmt.Errorf("connecting to migrate: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))

	m, err := migrate.NewMigrator(ctx, conn, VersionTable)
	if err != nil {
		return fmt.Errorf("preparing migrations: %w", err)
	}
	if err := m.LoadMigrations(Migrations()); err != nil {
		return fmt.Errorf("loading migrations: %w", err)
	}
	if err := m.Migrate(ctx); err != nil {
		return fmt.Errorf("applying migrations: %w", err)
	}
	return nil
}

// CurrentVersion returns the number of the last migration applied to the database at
// url (0 when none), and the number of embedded migrations.
func CurrentVersion(ctx context.Context, url string) (current, latest int32, err error) {
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		return 0, 0, fmt.Errorf("connecting: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	m, err := migrate.NewMigrator(ctx, conn, VersionTable)
	if err != nil {
		return 0, 0, fmt.Errorf("preparing migrations: %w", err)
	}
	if err := m.LoadMigrations(Migrations()); err != nil {
		return 0, 0, fmt.Errorf("loading migrations: %w", err)
	}
	current, err = m.GetCurrentVersion(ctx)
	if err != nil {
		return 0, 0, fmt.Errorf("reading schema version: %w", err)
	}
	return current, int32(len(m.Migrations)), nil
}

// EnsureDatabase creates the database named in url if it does not exist, connecting to
// the server's "postgres" database to do so (used by `aerogate dev`).
func EnsureDatabase(ctx context.Context, url string) error {
	cfg, err := pgx.ParseConfig(url)
	if err != nil {
		return fmt.Errorf("parsing database url: %w", err)
	}
	name := cfg.Database
	if name == "" {
		return errors.New("database url names no database")
	}
	cfg.Database = "postgres"
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return fmt.Errorf("connecting to the postgres database to create %s: %w", name, err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	return CreateDatabase(ctx, conn, name)
}

// CreateDatabase creates the named database through conn unless it exists. Two callers
// racing to create the same database both succeed.
func CreateDatabase(ctx context.Context, conn *pgx.Conn, name string) error {
	var exists bool
	if err := conn.QueryRow(ctx,
		"SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)", name).Scan(&exists); err != nil {
		return fmt.Errorf("looking up database %s: %w", name, err)
	}
	if exists {
		return nil
	}
	_, err := conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize())
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && (pgErr.Code == "42P04" || pgErr.Code == "23505") {
		// 42P04 duplicate_database; 23505 when the catalog insert races another CREATE.
		return nil
	}
	if err != nil {
		return fmt.Errorf("creating database %s: %w", name, err)
	}
	return nil
}

// DropDatabase drops the named database through conn, terminating its connections.
func DropDatabase(ctx context.Context, conn *pgx.Conn, name string) error {
	if _, err := conn.Exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)"); err != nil {
		return fmt.Errorf("dropping database %s: %w", name, err)
	}
	return nil
}
