package main

import "github.com/aerostic/aerogate/internal/cputime"

// benchDatabase is the database of this run, whose Postgres backends readCPU counts. Set
// by newEnv.
var benchDatabase string

func readCPU() cputime.Usage { return cputime.Read(benchDatabase) }
