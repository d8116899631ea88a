package main

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// cpuUse is CPU time spent so far by this process (load generator and the roles under
// test) and by the machine's Postgres server processes. On a shared machine CPU per
// request says more than requests per second: it does not depend on what else runs.
type cpuUse struct {
	self     time.Duration
	postgres time.Duration
}

// benchDatabase is the database of this run: Postgres backends serving other databases
// (another program on the machine) are not counted. Set by newEnv.
var benchDatabase string

// clockTick is USER_HZ, the unit of /proc/<pid>/stat times; 100 on every Linux we run.
const clockTick = 100

func readCPU() cpuUse {
	var u cpuUse
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) == nil {
		u.self = time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	dirs, _ := filepath.Glob("/proc/[0-9]*")
	for _, d := range dirs {
		comm, err := os.ReadFile(filepath.Join(d, "comm"))
		if err != nil || strings.TrimSpace(string(comm)) != "postgres" {
			continue
		}
		if !ours(d) {
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
		u.postgres += time.Duration(ut+st) * time.Second / clockTick
	}
	return u
}

func (u cpuUse) sub(o cpuUse) cpuUse {
	return cpuUse{self: u.self - o.self, postgres: u.postgres - o.postgres}
}

// ours tells a Postgres process of this run: a backend connected to benchDatabase, or
// one of the server's shared processes (WAL writer, checkpointer, background writer,
// autovacuum), which work for every database.
func ours(procDir string) bool {
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
	return len(title) >= 4 && title[3] == benchDatabase
}
