// Command chat-peer is a small chat server built on Go's standard library
// alone. It exists so that chat-bench can measure a Go server side by side
// with secure-chat's Rust server, on loopback, over the same protocol.
//
// It speaks the part of PROTOCOL.md that chat-bench relies on: the
// greeting, chat lines echoed to everyone in one order, "hi", "bye" and
// "/quit", the line limit, clean closes and the shutdown notice. Two
// designs are built in and chosen with -design: see naive.go and hub.go.
package main

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"
	"unicode"
)

const (
	maxLine          = 4096
	handshakeTimeout = 10 * time.Second
	// After SIGINT or SIGTERM, how long clients get to receive the notice
	// and close_notify before whatever is left is cut; the process must be
	// gone within 2 s.
	shutdownGrace = 1500 * time.Millisecond

	welcomeNotice  = "notice Welcome to the secure chat server!\n"
	helloReply     = "notice Hola, cómo puedo ayudarte hoy?\n"
	farewellNotice = "notice Ciao, Buonanotte!\n"
	shutdownNotice = "notice server shutting down, goodbye\n"
	tooLongError   = "error line too long: the limit is 4096 bytes; it was not sent\n"
)

var quiet bool

// logEvent logs one connection event, unless -q was given.
func logEvent(format string, args ...any) {
	if !quiet {
		log.Printf(format, args...)
	}
}

// design is what the two servers share: serve gets each connection once its
// handshake is done and returns when the connection is finished with;
// shutdown is called once, on SIGINT or SIGTERM, and must not block.
type design interface {
	serve(c *conn)
	shutdown()
}

// live counts connections from accept to close, for shutdown to wait on.
var live sync.WaitGroup

// conn is one client connection after its handshake.
type conn struct {
	name   string // guestN
	tls    *tls.Conn
	raw    net.Conn
	closed sync.Once
}

// close ends the connection cleanly: close_notify, then the TCP close.
func (c *conn) close() {
	c.tls.Close()
	c.closed.Do(live.Done)
}

// cut closes the TCP connection at once, without close_notify. It also
// wakes a goroutine blocked reading or writing it.
func (c *conn) cut() {
	c.raw.Close()
	c.closed.Do(live.Done)
}

// greeting is what a client is sent on arrival; k counts it too.
func greeting(name string, k int) []string {
	people := fmt.Sprintf("%d people here", k)
	if k == 1 {
		people = "1 person here"
	}
	return []string{
		welcomeNotice,
		"notice you are " + name + "\n",
		"notice you are in #lobby (" + people + ")\n",
	}
}

type lineKind int

const (
	say   lineKind = iota // anything else: said to everyone
	hello                 // "hi": said, and answered
	quit                  // "bye", "/quit" or "/quit REASON"
)

func classify(text string) lineKind {
	trimmed := strings.TrimSpace(text)
	switch {
	case strings.EqualFold(trimmed, "hi"):
		return hello
	case strings.EqualFold(trimmed, "bye"):
		return quit
	case strings.HasPrefix(text, "/quit") && (len(text) == 5 || unicode.IsSpace(rune(text[5]))):
		return quit
	}
	return say
}

// readLines hands every non-blank line that r sends, without its "\n" or
// "\r\n", to handle, which returns false to stop. A line over maxLine bytes
// is discarded as it arrives, never stored, and reported to tooLong. A last
// line without a line end counts when the client closed with close_notify.
// The result is nil after close_notify or a stop, else what ended the
// connection.
func readLines(r io.Reader, handle func(text string) bool, tooLong func()) error {
	// Room for a line at the limit and its "\r\n": what does not fit is too long.
	br := bufio.NewReaderSize(r, maxLine+2)
	for {
		line, err := br.ReadSlice('\n')
		long := err == bufio.ErrBufferFull
		for err == bufio.ErrBufferFull {
			line, err = br.ReadSlice('\n')
		}
		if err != nil && (err != io.EOF || len(line) == 0) {
			if err == io.EOF { // tls.Conn's word for close_notify
				return nil
			}
			return err
		}
		line = bytes.TrimSuffix(bytes.TrimSuffix(line, []byte("\n")), []byte("\r"))
		switch {
		case long || len(line) > maxLine:
			tooLong()
		case len(bytes.TrimSpace(line)) == 0:
		case !handle(string(line)):
			return nil
		}
		if err != nil {
			return nil // that was the last line, cut short by close_notify
		}
	}
}

func main() {
	addr := flag.String("addr", "127.0.0.1:8080", "address to listen on")
	certFile := flag.String("cert", "certs/server.crt", "server certificate chain (PEM)")
	keyFile := flag.String("key", "certs/server.key", "server private key (PEM)")
	designName := flag.String("design", "hub", "server design: naive or hub")
	queue := flag.Int("queue", 4096, "hub: lines waiting for one client before it is cut as too slow")
	flag.BoolVar(&quiet, "q", false, "log errors only")
	flag.Parse()
	log.SetPrefix("chat-peer: ")

	var d design
	switch *designName {
	case "naive":
		d = newNaive()
	case "hub":
		if *queue < 1 {
			fmt.Fprintln(os.Stderr, "chat-peer: -queue must be at least 1")
			os.Exit(2)
		}
		d = newHub(*queue)
	default:
		fmt.Fprintf(os.Stderr, "chat-peer: -design must be naive or hub, not %q\n", *designName)
		os.Exit(2)
	}
	cert, err := tls.LoadX509KeyPair(*certFile, *keyFile)
	if err != nil {
		log.Fatalf("loading the certificate: %v", err)
	}
	// Go's defaults (TLS 1.3 with X25519 first, session tickets on) but
	// nothing older than TLS 1.2.
	config := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		log.Fatal(err)
	}
	logEvent("listening on %s, design %s", ln.Addr(), *designName)

	accepting := make(chan struct{})
	go acceptLoop(ln, config, d, accepting)

	signals := make(chan os.Signal, 1)
	signal.Notify(signals, syscall.SIGINT, syscall.SIGTERM)
	<-signals
	ln.Close()
	<-accepting // no live.Add after this: live.Wait is safe
	d.shutdown()
	closed := make(chan struct{})
	go func() {
		live.Wait()
		close(closed)
	}()
	select {
	case <-closed:
	case <-time.After(shutdownGrace):
		// Returning from main exits, which closes every socket left.
		logEvent("shutdown: cutting the connections that have not closed")
	}
}

func acceptLoop(ln net.Listener, config *tls.Config, d design, done chan<- struct{}) {
	defer close(done)
	number := 0
	for {
		raw, err := ln.Accept()
		if errors.Is(err, net.ErrClosed) {
			return
		}
		if err != nil {
			// Most likely out of file descriptors: wait for some to free.
			log.Printf("accept: %v", err)
			time.Sleep(50 * time.Millisecond)
			continue
		}
		number++
		live.Add(1)
		go handshake(raw, number, config, d)
	}
}

// handshake runs the TLS handshake within handshakeTimeout, then hands
// the connection to the design.
func handshake(raw net.Conn, number int, config *tls.Config, d design) {
	t := tls.Server(raw, config)
	t.SetDeadline(time.Now().Add(handshakeTimeout))
	if err := t.Handshake(); err != nil {
		logEvent("connection %d from %s: handshake failed: %v", number, raw.RemoteAddr(), err)
		raw.Close()
		live.Done()
		return
	}
	t.SetDeadline(time.Time{})
	c := &conn{name: fmt.Sprintf("guest%d", number), tls: t, raw: raw}
	logEvent("%s connected from %s", c.name, raw.RemoteAddr())
	d.serve(c)
}

// how says how a connection ended, for the log.
func how(err error) string {
	if err != nil {
		return " (" + err.Error() + ")"
	}
	return ""
}
