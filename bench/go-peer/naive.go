package main

import "sync"

// naive is the original teaching app's design, kept as it was on purpose:
// one goroutine per client reads its lines, and a broadcast takes one
// global lock and writes the line to every client in turn, one blocking
// Write (so one TLS record) per client per line.
//
// Holding the lock across the writes is what keeps every client's view in
// one order, and it is also this design's weakness: when a client stops
// reading, its socket buffers fill, the Write to it blocks with the lock
// held, and nobody's lines move until it reads again. chat-bench measures
// that against the hub design, so do not "fix" it here.
type naive struct {
	mu       sync.Mutex
	clients  map[*conn]struct{}
	stopping bool
}

func newNaive() *naive {
	return &naive{clients: make(map[*conn]struct{})}
}

// send writes line to c; a client whose write fails is forgotten and cut.
// The caller holds s.mu: every write to a listed client happens under it.
func (s *naive) send(c *conn, line []byte) {
	if _, err := c.tls.Write(line); err != nil {
		delete(s.clients, c)
		c.cut()
		logEvent("%s cut: %v", c.name, err)
	}
}

func (s *naive) serve(c *conn) {
	s.mu.Lock()
	if s.stopping {
		s.mu.Unlock()
		c.tls.Write([]byte(shutdownNotice))
		c.close()
		return
	}
	s.clients[c] = struct{}{}
	for _, line := range greeting(c.name, len(s.clients)) {
		s.send(c, []byte(line))
	}
	s.mu.Unlock()

	quitting := false
	err := readLines(c.tls, func(text string) bool {
		kind := classify(text)
		if kind == quit {
			quitting = true
			return false
		}
		line := []byte("chat " + c.name + " " + text + "\n")
		s.mu.Lock()
		for other := range s.clients {
			s.send(other, line)
		}
		if _, listed := s.clients[c]; listed && kind == hello {
			s.send(c, []byte(helloReply))
		}
		s.mu.Unlock()
		return true
	}, func() {
		s.mu.Lock()
		if _, listed := s.clients[c]; listed {
			s.send(c, []byte(tooLongError))
		}
		s.mu.Unlock()
	})

	s.mu.Lock()
	_, listed := s.clients[c]
	delete(s.clients, c)
	s.mu.Unlock()
	if !listed {
		return // already cut, or closed by shutdown
	}
	// Unlisted, so no broadcast writes to c any more: this goroutine may.
	if quitting {
		c.tls.Write([]byte(farewellNotice))
	}
	c.close()
	logEvent("%s left%s", c.name, how(err))
}

// shutdown tells everyone and closes every connection, under the same lock
// as a broadcast, so it waits behind a stalled one; main cuts what is left
// at its deadline.
func (s *naive) shutdown() {
	go func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		s.stopping = true
		for c := range s.clients {
			s.send(c, []byte(shutdownNotice))
			delete(s.clients, c)
			c.close() // harmless after a cut

		}
	}()
}
