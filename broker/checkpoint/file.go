package checkpoint

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"sync"

	"github.com/stint-broker/stint/broker"
)

// File is a checkpoint file: one checkpoint per line, as JSON, only ever
// appended to. It is the sink that verification reads back. Keep it where
// the server's host cannot rewrite it: a file system mounted from another
// host, a file marked append-only (chattr +a), or a copy shipped off the
// host as it grows.
type File struct {
	// Path is the file; it is created (mode 0640) on the first write.
	Path string

	mu sync.Mutex
}

var (
	_ Sink                         = (*File)(nil)
	_ broker.AuditCheckpointSource = (*File)(nil)
)

// WriteCheckpoint implements Sink: it appends cp as one line and syncs the
// file. If the file does not end with a newline (a write cut short), the
// line starts on a new one, so that the torn record stays visible.
func (f *File) WriteCheckpoint(_ context.Context, cp *broker.AuditCheckpoint) error {
	line, err := json.Marshal(cp)
	if err != nil {
		return fmt.Errorf("encode checkpoint: %w", err)
	}
	line = append(line, '\n')
	f.mu.Lock()
	defer f.mu.Unlock()
	fd, err := os.OpenFile(f.Path, os.O_RDWR|os.O_APPEND|os.O_CREATE, 0o640)
	if err != nil {
		return fmt.Errorf("open checkpoint file: %w", err)
	}
	defer fd.Close()
	if fi, err := fd.Stat(); err != nil {
		return fmt.Errorf("stat checkpoint file: %w", err)
	} else if fi.Size() > 0 {
		last := make([]byte, 1)
		if _, err := fd.ReadAt(last, fi.Size()-1); err != nil {
			return fmt.Errorf("read checkpoint file: %w", err)
		}
		if last[0] != '\n' {
			line = append([]byte{'\n'}, line...)
		}
	}
	if _, err := fd.Write(line); err != nil {
		return fmt.Errorf("append to checkpoint file: %w", err)
	}
	if err := fd.Sync(); err != nil {
		return fmt.Errorf("sync checkpoint file: %w", err)
	}
	return fd.Close()
}

// AuditCheckpoints implements broker.AuditCheckpointSource. Blank lines are
// skipped and an unfinished last line (a write in progress) is ignored; any
// other line that is not a checkpoint is an error wrapping
// broker.ErrAuditCheckpointMalformed. A missing file is an error wrapping
// fs.ErrNotExist.
func (f *File) AuditCheckpoints(ctx context.Context) ([]*broker.AuditCheckpoint, error) {
	fd, err := os.Open(f.Path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("checkpoint file %s does not exist (the server creates it when it starts with audit.checkpoints set; "+
			"if it ran, the file was removed): %w", f.Path, fs.ErrNotExist)
	} else if err != nil {
		return nil, fmt.Errorf("open checkpoint file: %w", err)
	}
	defer fd.Close()
	var out []*broker.AuditCheckpoint
	r := bufio.NewReaderSize(fd, 64<<10)
	for n := 1; ; n++ {
		if n%1024 == 0 && ctx.Err() != nil {
			return nil, ctx.Err()
		}
		line, err := r.ReadBytes('\n')
		if errors.Is(err, io.EOF) {
			return out, nil // no newline: unfinished, or nothing
		} else if err != nil {
			return nil, fmt.Errorf("read checkpoint file: %w", err)
		}
		if len(bytes.TrimSpace(line)) == 0 {
			continue
		}
		cp, err := broker.ParseAuditCheckpoint(line)
		if err != nil {
			return nil, fmt.Errorf("%s line %d: %w", f.Path, n, err)
		}
		out = append(out, cp)
	}
}
