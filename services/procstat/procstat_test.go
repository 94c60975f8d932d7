package procstat

import (
	"os"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestReadSelf(t *testing.T) {
	t.Parallel()
	before, err := Read(os.Getpid())
	require.NoError(t, err)
	// Burn some CPU so the reading must grow.
	deadline := time.Now().Add(50 * time.Millisecond)
	for x := 0; time.Now().Before(deadline); x++ {
		_ = x * x
	}
	after, err := Read(os.Getpid())
	require.NoError(t, err)
	require.Greater(t, after.CPU, before.CPU)
	require.Positive(t, after.RSS)
	require.Equal(t, before.Comm, after.Comm)
	require.Equal(t, os.Getppid(), after.PPid)
	require.GreaterOrEqual(t, CPUOfFamily(os.Getppid()), after.CPU, "a parent's family includes this process")
}

func TestParseOddNames(t *testing.T) {
	t.Parallel()
	line := "42 (a (b) c) S 1 1 1 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 1 0 100 1000 7 18446744073709551615"
	st, err := parse(line)
	require.NoError(t, err)
	require.Equal(t, "a (b) c", st.Comm)
	require.Equal(t, 3*time.Second, st.CPU)
	require.Equal(t, 7*int64(os.Getpagesize()), st.RSS)
	_, err = parse("garbage")
	require.Error(t, err)
}
