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
	// Changes is the number of entries the round changes on the target.
	Changes int `json:"changes"`
	// Rate is bytes per second over the round so far.
	Rate    float64       `json:"rate"`
	Elapsed time.Duration `json:"elapsed_ns"`
	Message string        `json:"message,omitempty"`
}

// meter counts what a round sends and reports it at an interval.
type meter struct {
	files atomic.Int64
	bytes atomic.Int64
	start time.Time
	base  Event
	emit  func(Event)

	stop chan struct{}
	wg   sync.WaitGroup
}

// startMeter reports base with counts every interval until stopped.
func startMeter(base Event, every time.Duration, emit func(Event)) *meter {
	m := &meter{start: time.Now(), base: base, emit: emit, stop: make(chan struct{})}
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
