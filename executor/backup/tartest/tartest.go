// Package tartest writes tar archives block by block, for tests that play someone with write
// access to a backup store: sparse maps, GNU long names, raw PAX headers and sizes a header only
// claims, which the standard library's writer refuses to write.
package tartest

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"path"
	"strconv"
)

// Raw builds a tar stream block by block.
type Raw struct{ bytes.Buffer }

// Header writes one 512-byte header. gnu selects the GNU magic (needed by 'L', 'K', 'S').
func (r *Raw) Header(name string, typ byte, size int64, link string, gnu bool, extra func(b []byte)) {
	b := make([]byte, 512)
	copy(b[0:100], name)
	copy(b[100:108], "0000644\x00")
	copy(b[108:116], "0000000\x00")
	copy(b[116:124], "0000000\x00")
	if size >= 0 && size < 1<<33 {
		copy(b[124:136], fmt.Sprintf("%011o\x00", size))
	} else { // base-256, as GNU tar writes large sizes
		b[124] = 0x80
		binary.BigEndian.PutUint64(b[128:136], uint64(size))
	}
	copy(b[136:148], "14712345670\x00")
	b[156] = typ
	copy(b[157:257], link)
	if gnu {
		copy(b[257:265], "ustar  \x00")
	} else {
		copy(b[257:263], "ustar\x00")
		copy(b[263:265], "00")
	}
	if extra != nil {
		extra(b)
	}
	copy(b[148:156], "        ")
	sum := 0
	for _, c := range b {
		sum += int(c)
	}
	copy(b[148:156], fmt.Sprintf("%06o\x00 ", sum))
	r.Write(b)
}

// Data writes an entry's data, padded to a block.
func (r *Raw) Data(p []byte) {
	r.Write(p)
	if n := len(p) % 512; n != 0 {
		r.Write(make([]byte, 512-n))
	}
}

// File writes a regular file.
func (r *Raw) File(name, body string) {
	r.Header(name, '0', int64(len(body)), "", false, nil)
	r.Data([]byte(body))
}

// Dir writes a directory.
func (r *Raw) Dir(name string) { r.Header(name, '5', 0, "", false, nil) }

// PAX writes a PAX extended header ('x') with these records, in order.
func (r *Raw) PAX(kv ...string) {
	var body bytes.Buffer
	for i := 0; i+1 < len(kv); i += 2 {
		body.WriteString(paxRecord(kv[i], kv[i+1]))
	}
	r.Header("PaxHeaders/x", 'x', int64(body.Len()), "", false, nil)
	r.Data(body.Bytes())
}

func paxRecord(k, v string) string {
	n := len(k) + len(v) + 3
	total := n + len(strconv.Itoa(n))
	if len(strconv.Itoa(total)) > len(strconv.Itoa(n)) {
		total++
	}
	return fmt.Sprintf("%d %s=%s\n", total, k, v)
}

// End writes the end of the archive and returns it.
func (r *Raw) End() []byte {
	r.Write(make([]byte, 1024))
	return r.Bytes()
}

// Sparse writes a PAX sparse file (GNU format 1.0) of size bytes, all a hole but its last byte:
// an entry of about a kilobyte that a tar reader expands to size bytes.
func (r *Raw) Sparse(name string, size int64) {
	dir, file := path.Split(name)
	r.PAX("GNU.sparse.major", "1", "GNU.sparse.minor", "0", "GNU.sparse.name", name, "GNU.sparse.realsize", strconv.FormatInt(size, 10))
	sparseMap := []byte(fmt.Sprintf("1\n%d\n1\n", size-1))
	sparseMap = append(sparseMap, make([]byte, 512-len(sparseMap))...)
	r.Header(dir+"GNUSparseFile.0/"+file, '0', 513, "", false, nil)
	r.Data(append(sparseMap, 'X'))
}
