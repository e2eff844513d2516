package migrate

import (
	"sync"
	"sync/atomic"
	"time"
)

// Phases of a migration, in order.
const (
	PhaseConnect = "connect"
	PhasePrepare = "prepare"
	PhasePrecopy = "precopy"
	PhaseFinal   = "final"
	PhaseVerify  = "verify"
	PhaseSwitch  = "switch"
	PhaseDone    = "done"
)

// Event reports progress. Events of one migration come from one goroutine
// at a time, in order.
type Event struct {
	Phase string `json:"phase"`
	// Round counts pre-copy rounds from 1; the final pass has the next one.
	Round int `json:"round,omitempty"`
	// Files and Bytes are what the current round sent so far, out of
	// FilesTotal and BytesTotal it plans to send.
	Files      int   `json:"files"`
	FilesTotal int   `json:"files_total"`
	Bytes      int64 `json:"bytes"`
	BytesTotal int64 `json:"bytes_total"`
	// Matched is content of the files sent by delta that the target had
	// already (not sent); Checksums the bytes of block checksums the target
	// answered for them.
	Matched   int64 `json:"matched_bytes,omitempty"`
	Checksums int64 `json:"checksum_bytes,omitempty"`
	// Wire is what the SSH connection carried so far in both directions,
	// encryption and every channel included.
	Wire int64 `json:"wire_bytes,omitempty"`
	// Changes is the number of entries the round changes on the target.
	Changes int `json:"changes"`
	// Rate is bytes per second over the round so far.
	Rate    float64       `json:"rate"`
	Elapsed time.Duration `json:"elapsed_ns"`
	Message string        `json:"message,omitempty"`
}

// meter counts what a round sends and reports it at an interval.
type meter struct {
	files   atomic.Int64
	bytes   atomic.Int64
	matched atomic.Int64
	sums    atomic.Int64
	wire    func() int64
	start   time.Time
	base    Event
	emit    func(Event)

	stop chan struct{}
	wg   sync.WaitGroup
}

// startMeter reports base with counts every interval until stopped.
// wire, when not nil, returns the bytes on the wire so far.
func startMeter(base Event, every time.Duration, emit func(Event), wire func() int64) *meter {
	m := &meter{start: time.Now(), base: base, emit: emit, stop: make(chan struct{}), wire: wire}
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-m.stop:
				return
			case <-t.C:
				emit(m.event())
			}
		}
	}()
	return m
}

func (m *meter) event() Event {
	e := m.base
	e.Files = int(m.files.Load())
	e.Bytes = m.bytes.Load()
	e.Matched = m.matched.Load()
	e.Checksums = m.sums.Load()
	if m.wire != nil {
		e.Wire = m.wire()
	}
	e.Elapsed = time.Since(m.start)
	if s := e.Elapsed.Seconds(); s > 0 {
		e.Rate = float64(e.Bytes) / s
	}
	return e
}

// done stops the reports and returns the last state.
func (m *meter) done() Event {
	close(m.stop)
	m.wg.Wait()
	return m.event()
}
