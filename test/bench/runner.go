package main

import (
	"fmt"
	"os"
	"sync"
)

// runner implements harness.TB for a program. Fatalf aborts the scenario
// that is running (see try); cleanups run in reverse order when the scenario
// ends, or at close.
type runner struct {
	mu       sync.Mutex
	cleanups []func()
	failed   bool
}

// fatal is what Fatalf panics with; try recovers it.
type fatal struct{ msg string }

func (f fatal) Error() string { return f.msg }

func (r *runner) Helper()                    {}
func (r *runner) Logf(f string, args ...any) { logf(f, args...) }
func (r *runner) Cleanup(f func()) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.cleanups = append(r.cleanups, f)
}
func (r *runner) Failed() bool                { return r.failed }
func (r *runner) Skipf(f string, args ...any) { r.Fatalf(f, args...) }
func (r *runner) Fatalf(f string, args ...any) {
	r.failed = true
	panic(fatal{fmt.Sprintf(f, args...)})
}

// try runs fn; a Fatalf inside it is returned as an error. The cleanups that
// fn registered run before try returns.
func (r *runner) try(fn func()) (err error) {
	r.mu.Lock()
	mark := len(r.cleanups)
	r.mu.Unlock()
	defer func() {
		r.unwind(mark)
		r.failed = false
	}()
	defer func() {
		if v := recover(); v != nil {
			f, ok := v.(fatal)
			if !ok {
				panic(v)
			}
			err = f
		}
	}()
	fn()
	return nil
}

// unwind runs the cleanups registered after mark, newest first.
func (r *runner) unwind(mark int) {
	for {
		r.mu.Lock()
		if len(r.cleanups) <= mark {
			r.mu.Unlock()
			return
		}
		f := r.cleanups[len(r.cleanups)-1]
		r.cleanups = r.cleanups[:len(r.cleanups)-1]
		r.mu.Unlock()
		func() {
			defer func() {
				if v := recover(); v != nil {
					logf("cleanup: %v", v)
				}
			}()
			f()
		}()
	}
}

func (r *runner) close() { r.unwind(0) }

// tempDir makes a short-named temporary directory removed at cleanup.
func (r *runner) tempDir(prefix string) string {
	dir, err := os.MkdirTemp("", "nrivol-bench-"+prefix+"-")
	if err != nil {
		r.Fatalf("%v", err)
	}
	r.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}
