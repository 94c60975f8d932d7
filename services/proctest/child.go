package proctest

import (
	"os"
	"runtime/pprof"
)

// ProfileEnv names a file the child writes a CPU profile to, for benchmarks.
const ProfileEnv = "ATTESTBOOT_TEST_CPUPROFILE"

// RunIfChild lets a test binary stand in for the program under test: when the environment
// variable env is "1", it runs main and exits with its code (profiling it when ProfileEnv is
// set); otherwise it returns. Call it first thing in TestMain, then re-execute os.Args[0] with
// env=1 to start the program as a real process.
func RunIfChild(env string, main func() int) {
	if os.Getenv(env) != "1" {
		return
	}
	if path := os.Getenv(ProfileEnv); path != "" {
		if f, err := os.Create(path); err == nil {
			if err := pprof.StartCPUProfile(f); err == nil {
				code := main()
				pprof.StopCPUProfile()
				f.Close()
				os.Exit(code)
			}
			f.Close()
		}
	}
	os.Exit(main())
}
