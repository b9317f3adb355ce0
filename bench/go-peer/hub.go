package main

import "bufio"

// hub is the tuned Go design. One goroutine, the hub, owns the set of
// clients and takes events from every reader on one channel, so every
// client sees the lines in the order the hub took them. Each client has a
// writer goroutine fed by a buffered channel: the hub never blocks on a
// client, it hands a line over without waiting and cuts a client whose
// channel is full ("too slow"), so one client that stops reading cannot
// hold back the others.
type hub struct {
	queue   int
	events  chan event
	stop    chan struct{}
	clients map[*client]struct{} // the hub goroutine's alone
}

type eventKind int

const (
	joined  eventKind = iota
	said              // a chat line; hello also answers "hi"
	refused           // a line was too long
	left              // the reader ended; farewell after "bye" or "/quit"
)

type event struct {
	kind     eventKind
	c        *client
	text     string
	hello    bool
	farewell bool
	err      error
}

type client struct {
	*conn
	out chan string // written by the hub only, closed by the hub only
}

// writeBuffer is one full TLS record of plaintext.
const writeBuffer = 16 << 10

func newHub(queue int) *hub {
	h := &hub{
		queue:   queue,
		events:  make(chan event, 256),
		stop:    make(chan struct{}),
		clients: make(map[*client]struct{}),
	}
	go h.run()
	return h
}

func (h *hub) shutdown() { close(h.stop) }

func (h *hub) serve(c *conn) {
	cl := &client{conn: c, out: make(chan string, h.queue)}
	go cl.writeLoop()
	h.events <- event{kind: joined, c: cl}
	farewell := false
	err := readLines(c.tls, func(text string) bool {
		kind := classify(text)
		if kind == quit {
			farewell = true
			return false
		}
		h.events <- event{kind: said, c: cl, text: text, hello: kind == hello}
		return true
	}, func() { h.events <- event{kind: refused, c: cl} })
	h.events <- event{kind: left, c: cl, farewell: farewell, err: err}
}

// run is the hub goroutine. It keeps running after shutdown, so that no
// reader ever blocks on h.events, and closes whoever still arrives.
func (h *hub) run() {
	stop, stopping := h.stop, false
	for {
		select {
		case <-stop:
			stop, stopping = nil, true // a nil channel is never ready again
			for c := range h.clients {
				h.send(c, shutdownNotice)
				h.forget(c)
			}
		case ev := <-h.events:
			c := ev.c
			switch ev.kind {
			case joined:
				if stopping {
					c.out <- shutdownNotice
					close(c.out)
					continue
				}
				h.clients[c] = struct{}{}
				for _, line := range greeting(c.name, len(h.clients)) {
					h.send(c, line)
				}
			case said:
				line := "chat " + c.name + " " + ev.text + "\n"
				for other := range h.clients {
					h.send(other, line)
				}
				if ev.hello {
					h.send(c, helloReply)
				}
			case refused:
				h.send(c, tooLongError)
			case left:
				if ev.farewell {
					h.send(c, farewellNotice)
				}
				if h.forget(c) {
					logEvent("%s left%s", c.name, how(ev.err))
				}
			}
		}
	}
}

// send queues line for c, if still listed, without waiting. A client whose
// queue is full is cut at once, with no notice: none could reach it.
func (h *hub) send(c *client, line string) {
	if _, listed := h.clients[c]; !listed {
		return
	}
	select {
	case c.out <- line:
	default:
		delete(h.clients, c)
		c.cut() // first, so that the writer stops writing rather than drain
		close(c.out)
		logEvent("%s cut: too slow (%d lines waiting)", c.name, h.queue)
	}
}

// forget drops c, if still listed; its writer sends what is queued, then
// closes the connection. False if c was not listed.
func (h *hub) forget(c *client) bool {
	if _, listed := h.clients[c]; !listed {
		return false
	}
	delete(h.clients, c)
	close(c.out)
	return true
}

// writeLoop writes what the hub queues for one client. It takes every line
// already waiting before it flushes, so that a burst leaves in a few full
// TLS records instead of one small record per line. When the hub closes
// the channel it sends the rest, then close_notify.
func (c *client) writeLoop() {
	w := bufio.NewWriterSize(c.tls, writeBuffer)
	for line := range c.out {
		w.WriteString(line)
		// Only this goroutine receives, so what len counts is there to take.
		for len(c.out) > 0 {
			w.WriteString(<-c.out)
		}
		if err := w.Flush(); err != nil {
			// Gone, or cut: wake the reader, and take the lines still
			// coming until the hub forgets this client.
			c.cut()
			for range c.out {
			}
			return
		}
	}
	c.close()
}
