// Package cputime reads the CPU time that the bench command and the benchmarks report
// per message: this process's, and that of the local Postgres server's processes working
// for one database. On a shared machine CPU per message says more than messages per
// second: it does not depend on what else runs. Linux only (/proc); elsewhere Postgres
// reads as zero.
package cputime

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Usage is CPU time spent so far (user plus system).
type Usage struct {
	Process  time.Duration // this process
	Postgres time.Duration // the Postgres processes of the database, see Read
}

// Sub returns u minus earlier: the CPU spent in between.
func (u Usage) Sub(earlier Usage) Usage {
	return Usage{Process: u.Process - earlier.Process, Postgres: u.Postgres - earlier.Postgres}
}

// clockTick is USER_HZ, the unit of /proc/<pid>/stat times; 100 on every Linux we run.
const clockTick = 100

// Read returns the CPU time of this process and of the Postgres server processes that
// work for database: its backends, and the server's shared processes (WAL writer,
// checkpointer, background writer, autovacuum), which work for every database. Backends
// of other databases (another program on the machine) are left out. Postgres processes
// that ended are not counted, so keep connections open across a measurement.
func Read(database string) Usage {
	var u Usage
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) == nil {
		u.Process = time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	dirs, _ := filepath.Glob("/proc/[0-9]*")
	for _, d := range dirs {
		comm, err := os.ReadFile(filepath.Join(d, "comm"))
		if err != nil || strings.TrimSpace(string(comm)) != "postgres" || !serves(d, database) {
			continue
		}
		stat, err := os.ReadFile(filepath.Join(d, "stat"))
		if err != nil {
			continue
		}
		// Fields after the parenthesised command name: utime and stime are 14 and 15.
		s := string(stat)
		if i := strings.LastIndexByte(s, ')'); i >= 0 {
			s = s[i+1:]
		}
		f := strings.Fields(s)
		if len(f) < 13 {
			continue
		}
		ut, _ := strconv.ParseInt(f[11], 10, 64)
		st, _ := strconv.ParseInt(f[12], 10, 64)
		u.Postgres += time.Duration(ut+st) * time.Second / clockTick
	}
	return u
}

// serves tells whether the Postgres process in procDir works for database.
func serves(procDir, database string) bool {
	b, err := os.ReadFile(filepath.Join(procDir, "cmdline"))
	if err != nil {
		return false
	}
	// A backend's title is "postgres: <cluster>: <user> <database> <client> <state>".
	title := strings.Fields(strings.ReplaceAll(string(b), "\x00", " "))
	if len(title) < 3 {
		return true // the postmaster
	}
	switch title[2] {
	case "walwriter", "checkpointer", "background", "autovacuum", "logical", "stats", "archiver", "walsender", "startup":
		return true
	}
	return len(title) >= 4 && title[3] == database
}
