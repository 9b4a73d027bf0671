package backup

import "golang.org/x/sys/unix"

func statMtime(st *unix.Stat_t) (sec, nsec int64) {
	return int64(st.Mtimespec.Sec), int64(st.Mtimespec.Nsec)
}
